"""Catalog tasks: thumbnails and metadata probes for newly imported images.

Enqueue through ``webapp.catalog.services.enqueue_thumbnails`` (chunks the ids and uses
``delay_on_commit``) rather than calling the task directly with a whole import's ids.
Task names carry their queue (``fgam.<queue>.<name>``) so routing is explicit.
"""

from __future__ import annotations

from webapp.core.retry import TRANSIENT_ERRORS
from workers.celery_app import app


@app.task(
    bind=True,
    name="fgam.default.make_thumbnails",
    queue="default",
    # Redelivery after a worker crash is safe: the service skips finished images and its
    # writes are overwrites of derived data.
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
    # A chunk of a few hundred images takes seconds; minutes means something is stuck.
    soft_time_limit=600,
    time_limit=660,
)
def make_thumbnails(self, image_ids: list[int]) -> dict:
    """Thumbnail and probe ``image_ids``; returns the Run's id, status and counts."""
    # Imported when the task runs: the service module imports this one to enqueue.
    from webapp.catalog.services import process_new_images

    run = process_new_images(image_ids=image_ids, task_id=self.request.id or "")
    return {"run": run.pk, "status": run.status, "done": run.done, "failed": run.failed}
