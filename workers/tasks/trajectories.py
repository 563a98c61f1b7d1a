"""Trajectory runs: one task per batch of question items, routed by where the models run.

- ``fgam.llm.trajectory_batch``: M and the RM are both OpenAI-compatible endpoints (I/O bound;
  many items in flight at once inside the task).
- ``fgam.gpu.trajectory_batch_local``: M or the RM is a local ``transformers`` model, loaded
  once per worker process.

Planning is the shared ``fgam.default.plan_run``. The options, retries and failure handling
are those of the other batch tasks (``workers.tasks.runs``): ``acks_late`` is safe because a
batch that runs again skips the items it already wrote (``Trajectory.source_key``) and only
one finisher counts.
"""

from __future__ import annotations

from celery import shared_task

from workers.tasks.runs import BATCH_OPTIONS, _run_batch


@shared_task(name="fgam.llm.trajectory_batch", queue="llm", **BATCH_OPTIONS)
def trajectory_batch(self, batch_id: int) -> dict:
    from webapp.jobs.trajectories import process_trajectory_batch

    return _run_batch(self, process_trajectory_batch, batch_id)


@shared_task(name="fgam.gpu.trajectory_batch_local", queue="gpu", **BATCH_OPTIONS)
def trajectory_batch_local(self, batch_id: int) -> dict:
    from webapp.jobs.trajectories import process_trajectory_batch

    return _run_batch(self, process_trajectory_batch, batch_id)


def task_for(parameters: dict):
    """The task (and so the queue) of a trajectory run with these parameters."""
    return trajectory_batch_local if parameters.get("queue") == "gpu" else trajectory_batch
