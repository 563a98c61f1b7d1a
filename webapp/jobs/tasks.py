"""Runs (pseudo-label, caption, trajectory): planning, and one task per batch routed by name.

- ``fgam.default.plan_run``: writes a run's batches (keyset over ids) and hands out the first.
- ``fgam.gpu.pseudo_label_batch``: Grounding DINO on one batch of images.
- ``fgam.gpu.caption_batch_local``: a local image-to-text model on one batch of regions.
- ``fgam.llm.caption_batch``: an OpenAI-compatible endpoint on one batch of regions.
- ``fgam.default.caption_batch_template``: the template captioner (no model, no GPU).
- ``fgam.llm.trajectory_batch``: trajectories where M and the RM are both OpenAI-compatible
  endpoints (I/O bound; many items in flight at once inside the task).
- ``fgam.gpu.trajectory_batch_local``: trajectories where M or the RM is a local
  ``transformers`` model, loaded once per worker process.

Every batch task takes a ``RunBatch`` id. ``acks_late`` with ``reject_on_worker_lost``: a batch
whose worker died is delivered again, which is safe because the services write idempotently
(deterministic region keys, conditional caption updates, a batch of trajectories that runs
again skips the items it already wrote by ``Trajectory.source_key``, a conditional finish that
counts once). Transient failures (the database or storage briefly away) retry with backoff;
anything else fails the batch with its reason, and the run goes on with its other batches.
"""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from webapp.core.retry import TRANSIENT_ERRORS
from workers.celery_app import app

log = logging.getLogger(__name__)

BATCH_OPTIONS = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": 5,
    # A batch is seconds to minutes of work; an hour means it is stuck. Keep below the broker's
    # visibility timeout (CELERY_VISIBILITY_TIMEOUT), or Redis hands it out twice meanwhile.
    "soft_time_limit": 3300,
    "time_limit": 3600,
}


def _run_batch(task, process, batch_id: int) -> dict:
    """Run ``process`` for the batch; retry transient errors, fail the batch on the rest."""
    from webapp.jobs.services import fail_batch

    try:
        batch = process(batch_id=batch_id, task_id=task.request.id or "")
    except TRANSIENT_ERRORS as exc:
        if task.request.retries < task.max_retries:
            delay = min(5 * 2**task.request.retries, 300)
            log.warning("batch %s: %s; retrying in %ss", batch_id, exc, delay)
            raise task.retry(exc=exc, countdown=delay) from exc
        fail_batch(batch_id=batch_id, error=exc)
        return {"batch": batch_id, "status": "failed"}
    except (Exception, SoftTimeLimitExceeded) as exc:
        log.exception("batch %s failed", batch_id)
        fail_batch(batch_id=batch_id, error=exc)
        return {"batch": batch_id, "status": "failed"}
    if batch is None:
        return {"batch": batch_id, "status": "skipped"}
    return {"batch": batch_id, "status": "done"}


@app.task(name="fgam.gpu.pseudo_label_batch", queue="gpu", **BATCH_OPTIONS)
def pseudo_label_batch(self, batch_id: int) -> dict:
    from webapp.jobs.pseudo_label import process_pseudo_label_batch

    return _run_batch(self, process_pseudo_label_batch, batch_id)


@app.task(name="fgam.gpu.caption_batch_local", queue="gpu", **BATCH_OPTIONS)
def caption_batch_local(self, batch_id: int) -> dict:
    from webapp.jobs.captioning import process_caption_batch

    return _run_batch(self, process_caption_batch, batch_id)


@app.task(name="fgam.llm.caption_batch", queue="llm", **BATCH_OPTIONS)
def caption_batch(self, batch_id: int) -> dict:
    from webapp.jobs.captioning import process_caption_batch

    return _run_batch(self, process_caption_batch, batch_id)


@app.task(name="fgam.default.caption_batch_template", queue="default", **BATCH_OPTIONS)
def caption_batch_template(self, batch_id: int) -> dict:
    from webapp.jobs.captioning import process_caption_batch

    return _run_batch(self, process_caption_batch, batch_id)


@app.task(
    bind=True,
    name="fgam.default.plan_run",
    queue="default",
    # Planning continues from the last batch it wrote, so running it twice is harmless.
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=3300,
    time_limit=3600,
)
def plan_run(self, run_id: int) -> dict:
    from webapp.jobs.models import Run
    from webapp.jobs.services import plan_run as plan

    run = Run.objects.only("kind").get(pk=run_id)
    try:
        run = plan(run_id=run_id, items=_items_for(run.kind))
    except SoftTimeLimitExceeded:
        plan_run.delay(run_id)  # a very large run: go on in a fresh task from where it stopped
        return {"run": run_id, "status": "continued"}
    return {"run": run.pk, "status": run.status, "total": run.total}


def _items_for(kind: str):
    from webapp.jobs.captioning import selected_regions
    from webapp.jobs.models import Run
    from webapp.jobs.pseudo_label import selected_images

    if kind == Run.Kind.TRAJECTORY:
        from webapp.jobs.trajectories import selected_questions

        return selected_questions
    return selected_images if kind == Run.Kind.PSEUDO_LABEL else selected_regions


@app.task(name="fgam.llm.trajectory_batch", queue="llm", **BATCH_OPTIONS)
def trajectory_batch(self, batch_id: int) -> dict:
    from webapp.jobs.trajectories import process_trajectory_batch

    return _run_batch(self, process_trajectory_batch, batch_id)


@app.task(name="fgam.gpu.trajectory_batch_local", queue="gpu", **BATCH_OPTIONS)
def trajectory_batch_local(self, batch_id: int) -> dict:
    from webapp.jobs.trajectories import process_trajectory_batch

    return _run_batch(self, process_trajectory_batch, batch_id)


def trajectory_task_for(parameters: dict):
    """The task (and so the queue) of a trajectory run with these parameters."""
    return trajectory_batch_local if parameters.get("queue") == "gpu" else trajectory_batch
