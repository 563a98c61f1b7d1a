"""Pseudo-label and caption runs through real Celery workers on Redis and PostgreSQL.

The kill test SIGKILLs the whole worker (main process and pool child) while a batch runs.
The message of that batch was never acknowledged (``acks_late``), so Redis hands it out again
once the broker's visibility timeout has passed: the test worker runs with
``CELERY_VISIBILITY_TIMEOUT=3`` and the new worker is started after that, which makes kombu
restore the message as it starts polling. (When only the pool child dies, the main process
sees it and requeues the message at once: ``reject_on_worker_lost``.) In production the
timeout stays above the task time limit, and ``resume`` re-hands out a stalled run's batches
without waiting for it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.catalog.factories import DatasetFactory
from tests.jobs.conftest import region_set, stored_scene
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.pseudo_label import start_pseudo_label_run
from webapp.regions.models import Region, RegionChange
from workers.tiny_models import build_tiny_grounding_dino

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DEADLINE_S = 180
VISIBILITY_TIMEOUT_S = 3
LABELS = ["dog", "cat", "red car"]


@pytest.fixture(scope="module")
def tiny_detector_dir(tmp_path_factory) -> str:
    return str(build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-grounding-dino")))


@pytest.fixture
def gpu_worker_env():
    return {
        "FGAM_DEVICE": "cpu",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        "OMP_NUM_THREADS": "1",
    }


def wait_for_run(run: Run, worker, *, until=lambda run: not run.is_open) -> Run:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if until(run):
            return run
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died during run {run.pk}:\n{worker.log()[-5000:]}")
        time.sleep(0.005)
    pytest.fail(
        f"run {run.pk} did not get there in {DEADLINE_S}s: {run.status} {run.done}/"
        f"{run.total}\n{worker.log()[-5000:]}"
    )


def scenes(count: int, size=(320, 240)):
    dataset = DatasetFactory(name="worker-scenes")
    for n in range(count):
        stored_scene(dataset, n, size)
    return dataset


def test_a_pseudo_label_run_then_a_caption_run_go_through_real_workers(
    start_celery_worker, gpu_worker_env, tiny_detector_dir, media_root
):
    worker = start_celery_worker("default", "gpu", env=gpu_worker_env)
    dataset = scenes(6)

    run = start_pseudo_label_run(
        dataset=dataset, model=tiny_detector_dir, labels=LABELS, batch_size=4, device="cpu"
    )
    run = wait_for_run(run, worker)

    assert (run.status, run.done, run.failed, run.total) == (Run.Status.SUCCEEDED, 6, 0, 6)
    regions = Region.objects.filter(run=run)
    assert regions.count() == run.summary["regions"] > 0
    assert "Task fgam.gpu.pseudo_label_batch" in worker.log()

    from webapp.jobs.captioning import start_caption_run

    caption_run = start_caption_run(
        dataset=dataset, strategy="template", batch_size=50, region_filter={"run": run.pk}
    )
    caption_run = wait_for_run(caption_run, worker)

    assert caption_run.status == Run.Status.SUCCEEDED
    assert caption_run.done == caption_run.total == regions.count()
    assert not regions.filter(caption="").exists()
    changes = RegionChange.objects.filter(run=caption_run)
    assert changes.count() == regions.count()
    assert all(c.before["caption"] == "" and c.after["caption"] for c in changes[:20])
    assert "Task fgam.default.caption_batch_template" in worker.log()


def test_killing_the_worker_mid_run_and_starting_another_gives_the_same_regions(
    start_celery_worker, gpu_worker_env, tiny_detector_dir, media_root
):
    dataset = scenes(24)
    worker = start_celery_worker("default", "gpu", env=gpu_worker_env)
    options = {"model": tiny_detector_dir, "labels": LABELS, "batch_size": 8, "device": "cpu"}
    reference = wait_for_run(start_pseudo_label_run(dataset=dataset, **options), worker)
    assert reference.status == Run.Status.SUCCEEDED

    run = start_pseudo_label_run(dataset=dataset, **options)
    wait_for_run(
        run,
        worker,
        until=lambda run: (
            run.done >= 8
            and RunBatch.objects.filter(run=run, status=RunBatch.Status.RUNNING).exists()
        ),
    )
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    killed_at = time.monotonic()
    interrupted = RunBatch.objects.get(run=run, status=RunBatch.Status.RUNNING)
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.done < run.total

    time.sleep(max(0.0, VISIBILITY_TIMEOUT_S + 1 - (time.monotonic() - killed_at)))
    second = start_celery_worker("default", "gpu", env=gpu_worker_env)
    run = wait_for_run(run, second)

    assert (run.status, run.done, run.failed, run.total) == (Run.Status.SUCCEEDED, 24, 0, 24)
    assert region_set(run) == region_set(reference)
    assert Region.objects.filter(run=run).count() == Region.objects.filter(run=reference).count()
    interrupted.refresh_from_db()
    assert (interrupted.status, interrupted.attempts) == (RunBatch.Status.DONE, 2)
