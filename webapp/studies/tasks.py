"""``fgam.default.advance_study``: start the steps of a study whose needs have finished.

Enqueued when a study's job finishes (``webapp.core.job_events``). ``advance`` is idempotent and
locks the study, so a redelivered or duplicated task starts nothing twice: ``acks_late`` is safe.
"""

from __future__ import annotations

from webapp.core.retry import TRANSIENT_ERRORS
from workers.celery_app import app


@app.task(
    name="fgam.default.advance_study",
    queue="default",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    max_retries=5,
)
def advance_study(study_id: int) -> dict:
    from webapp.studies.services import advance

    started = advance(study_id)
    return {"study": study_id, "started": [step.key for step in started]}


@app.task(name="fgam.gpu.study_tower", queue="gpu", acks_late=False)
def swap_tower(step_id: int) -> dict:
    from webapp.studies.towers import run_tower_step

    step = run_tower_step(step_id=step_id)
    return {"step": step_id, "status": step.status if step else "skipped"}
