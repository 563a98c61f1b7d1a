"""Dataset versions, training jobs and webhooks.

- ``fgam.default.export_version``: writes one dataset version (``webapp.exports.services``).
- ``fgam.gpu.train``: runs ``python -m training ...`` for one training job as a subprocess.
- ``fgam.default.deliver_webhook``: one signed POST; failures retry with backoff.
"""

from __future__ import annotations

from webapp.core.retry import TRANSIENT_ERRORS
from workers.celery_app import app


@app.task(
    name="fgam.default.export_version",
    queue="default",
    # A redelivered export starts over in a new temporary folder; a ready version is skipped.
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=3,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def export_version(version_id: int) -> dict:
    from webapp.exports.services import export_version as export

    version = export(version_id=version_id)
    if version is None:
        return {"version": version_id, "status": "skipped"}
    return {"version": version_id, "status": version.status, "sha256": version.content_sha256}


@app.task(
    name="fgam.gpu.train",
    queue="gpu",
    # Not acks_late: a training run is not cheap to start twice; a lost worker fails the job.
    acks_late=False,
)
def train(job_id: int) -> dict:
    from webapp.exports.training_jobs import run_training_job

    job = run_training_job(job_id=job_id)
    return {"job": job_id, "status": job.status if job else "skipped"}


@app.task(bind=True, name="fgam.default.deliver_webhook", queue="default", max_retries=None)
def deliver_webhook(self, delivery_id: int) -> dict:
    from webapp.exports.webhooks import attempt_delivery, retry_delay

    delivery = attempt_delivery(delivery_id=delivery_id)
    # Without a broker (quick start, eager mode) the attempts follow each other at once: an
    # in-process retry would sleep inside the request that triggered the event.
    while delivery.status == delivery.Status.RETRYING and self.request.is_eager:
        delivery = attempt_delivery(delivery_id=delivery_id)
    if delivery.status == delivery.Status.RETRYING:
        raise self.retry(countdown=retry_delay(delivery.attempts))
    return {"delivery": delivery_id, "status": delivery.status}
