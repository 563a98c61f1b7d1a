"""A real Celery worker process for integration tests.

``start_celery_worker(*queues)`` starts ``celery -A workers.celery_app worker`` in a subprocess
against Redis (database 15, purged first) and the *test* database, waits until it answers a
ping, and points this process's Celery app at the same broker so ``task.delay()`` really goes
through Redis. Everything is undone at teardown: the worker is stopped and the app goes back to
running tasks eagerly.

Tests using it must commit their rows (``@pytest.mark.django_db(transaction=True)``), since
the worker reads through its own connection, and need the ``postgres`` fixture: SQLite's
in-memory test database is invisible to another process.

    @pytest.mark.services
    @pytest.mark.django_db(transaction=True)
    def test_something(celery_worker_process): ...              # queue "default"

    def test_gpu(start_celery_worker):
        worker = start_celery_worker("gpu", env={"FGAM_DEVICE": "cpu"})
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from webapp import celery_app

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60


@dataclass
class CeleryWorker:
    process: subprocess.Popen
    nodename: str
    queues: tuple[str, ...]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_database_url() -> str:
    """A URL for the database this test session really uses (``test_<name>``, not ``<name>``)."""
    s = connection.settings_dict
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{s['NAME']}"


def _drop_connections() -> None:
    """Forget pooled connections, so the next publish uses the broker URL now configured.

    ``app.close()`` alone is not enough: a producer pool made earlier (by an eager task, with
    the default ``amqp://`` URL) survives it and would swallow every message sent afterwards.
    """
    celery_app.close()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.__dict__.pop("control", None)  # its mailbox caches the producer pool


def _stop(worker: CeleryWorker) -> None:
    """Warm shutdown first (finishes the current task), then kill the process group we made."""
    if worker.process.poll() is None:
        os.killpg(worker.process.pid, signal.SIGTERM)
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


@pytest.fixture
def start_celery_worker(
    postgres, redis_url, media_root, tmp_path
) -> Iterator[Callable[..., CeleryWorker]]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # db 15 belongs to the tests: no stale tasks
    saved = {
        key: celery_app.conf[key] for key in ("broker_url", "task_always_eager", "result_backend")
    }
    _drop_connections()
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False, result_backend=None)
    workers: list[CeleryWorker] = []

    def start(*queues: str, env: dict[str, str] | None = None) -> CeleryWorker:
        queues = queues or ("default",)
        nodename = f"fgam-test-{uuid.uuid4().hex[:8]}@%h"
        log_path = tmp_path / f"celery-worker-{len(workers)}.log"
        worker_env = {
            **os.environ,
            "DATABASE_URL": worker_database_url(),
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": "",
            "MEDIA_ROOT": str(media_root),
            "FGAM_S3_BUCKET": "",
            "SECRET_KEY": "celery-worker-test-secret-key",
            "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"),
                    *("-Q", ",".join(queues), "-n", nodename, "--loglevel", "INFO"),
                    *("--pool", "prefork", "--concurrency", "1", "--prefetch-multiplier", "1"),
                    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                ],
                cwd=ROOT,
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown stops its children
            )
        worker = CeleryWorker(
            process, nodename.replace("%h", os.uname().nodename), queues, log_path
        )
        workers.append(worker)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"Celery worker exited with {process.returncode}:\n{worker.log()}")
            replies = celery_app.control.ping(timeout=0.5)
            if any(worker.nodename in reply for reply in replies):
                return worker
        pytest.fail(f"Celery worker did not answer a ping in {READY_TIMEOUT_S}s:\n{worker.log()}")

    try:
        yield start
    finally:
        for worker in workers:
            _stop(worker)
        _drop_connections()
        celery_app.conf.update(saved)


@pytest.fixture
def celery_worker_process(start_celery_worker) -> CeleryWorker:
    """One worker process consuming the ``default`` queue."""
    return start_celery_worker("default")
