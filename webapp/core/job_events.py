""" "A job finished": one tiny registry so that apps that wait on jobs hear of their end.

Training jobs (``webapp.exports``) and benchmark jobs (``webapp.benchmarks``) call
``job_finished`` when a job reaches its final status; an app that orchestrates jobs (studies)
registers a callback in its ``AppConfig.ready``. The job apps import only this module, so the
dependency stays one way (studies -> exports/benchmarks, never back), and no Django signal is
needed: a callback is a plain function of ``(kind, job_id)``.

The callbacks run after the transaction that wrote the status commits (``on_commit``), so what
they read is the final state; a callback that raises is logged and never fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

log = logging.getLogger(__name__)

TRAINING = "training"
BENCHMARK = "benchmark"

_CALLBACKS: list[Callable[[str, int], None]] = []


def on_job_finished(callback: Callable[[str, int], None]) -> None:
    """Register ``callback(kind, job_id)``; registering the same function twice is a no-op."""
    if callback not in _CALLBACKS:
        _CALLBACKS.append(callback)


def job_finished(kind: str, job_id: int) -> None:
    """Tell every registered callback, once the current transaction commits."""
    transaction.on_commit(lambda: _call_all(kind, job_id))


def _call_all(kind: str, job_id: int) -> None:
    for callback in list(_CALLBACKS):
        try:
            callback(kind, job_id)
        except Exception:  # a listener's bug must not turn a finished job into a failed one
            log.exception("job-finished callback %r failed for %s job %s", callback, kind, job_id)
