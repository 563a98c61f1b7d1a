"""Evaluation tasks: generating a system's responses with the rectification loop (gpu queue)."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

from workers.celery_app import app


@app.task(
    name="fgam.gpu.generate_responses",
    queue="gpu",
    # Redelivery is safe: the service claims the system (queued -> running) before it works.
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=10,
    max_retries=3,
)
def generate_responses(system_id: int) -> dict:
    """Run ``python -m training rectify`` for one system of an evaluation round."""
    from webapp.evaluation.generation import run_generation

    system = run_generation(system_id=system_id)
    if system is None:
        return {"system": system_id, "status": "skipped"}
    return {"system": system.pk, "status": system.status, "failures": len(system.failures)}
