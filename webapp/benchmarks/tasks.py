"""Benchmark jobs: one task per queue, both running ``python -m training bench`` for one job.

- ``fgam.gpu.benchmark``: a local checkpoint or hub model (batched ``generate`` on the GPU);
- ``fgam.llm.benchmark``: an OpenAI-compatible endpoint (many requests in flight, no GPU).

Not ``acks_late``: a redelivered job would score the whole set again; a lost worker leaves the
job failed by its watcher or, if the process died with it, running until a curator cancels it.
"""

from __future__ import annotations

from workers.celery_app import app


@app.task(name="fgam.gpu.benchmark", queue="gpu", acks_late=False)
def score_on_gpu(job_id: int) -> dict:
    return _score(job_id)


@app.task(name="fgam.llm.benchmark", queue="llm", acks_late=False)
def score_on_endpoint(job_id: int) -> dict:
    return _score(job_id)


def _score(job_id: int) -> dict:
    from webapp.benchmarks.runner import run_benchmark_job

    job = run_benchmark_job(job_id=job_id)
    return {"job": job_id, "status": job.status if job else "skipped"}
