"""Trajectory runs through real Celery workers on Redis and PostgreSQL, with M and the RM
played by the loopback server (endpoints, ``llm`` queue) or a tiny local LLaVA (``gpu`` queue).
"""

from __future__ import annotations

import time

import pytest

from tests.catalog.factories import DatasetFactory, QuestionItemFactory, RegionFactory
from tests.jobs.conftest import stored_scene
from tests.workers import trajectory_players as players
from tests.workers.llm_server import LLMServer
from training.formats import STOP_PHRASE
from training.stage2.prompts import prompt_versions
from webapp.jobs.models import Run
from webapp.jobs.trajectories import start_trajectory_run
from webapp.regions.models import Region
from webapp.trajectories.models import Trajectory, TrajectoryChange, TrajectoryStep

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DEADLINE_S = 180


def wait_for_end(run: Run, worker) -> Run:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_open:
            return run
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died during run {run.pk}:\n{worker.log()[-5000:]}")
        time.sleep(0.05)
    pytest.fail(f"run {run.pk} is still {run.status} after {DEADLINE_S}s:\n{worker.log()[-5000:]}")


def questions(count: int):
    dataset = DatasetFactory(name="worker-qa")
    for n in range(count):
        image = stored_scene(dataset, n)
        RegionFactory(
            image=image, phrase="red car", status=Region.Status.ACCEPTED,
            x0=10, y0=60, x1=70, y1=110,
        )  # fmt: skip
        QuestionItemFactory(
            image=image,
            question=("NEVER-ACCEPT " if n == 0 else "") + f"Q{n}: what colour is the car?",
            reference="The small car on the left is red. So it is easy to see.",
        )
    return dataset


def test_an_endpoint_run_on_the_llm_queue_writes_trajectories_steps_and_latencies(
    start_celery_worker,
):
    dataset = questions(5)
    worker = start_celery_worker("default", "llm")
    with LLMServer(responder=players.play, latency=0.01) as server:
        run = start_trajectory_run(
            dataset=dataset,
            m=f"{server.url}#mllm",
            rm=f"{server.url}#rm",
            k=2,
            batch_size=2,
            concurrency=4,
        )
        run = wait_for_end(run, worker)

    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 5, 5, 0)
    assert run.batches.count() == 3
    trajectories = Trajectory.objects.filter(run=run)
    assert trajectories.count() == 5
    assert {t.outcome for t in trajectories} == {"accepted", "max_steps"}
    assert trajectories.get(question__startswith="NEVER").steps.count() == 3  # K + 1
    for trajectory in trajectories.exclude(question__startswith="NEVER"):
        steps = list(trajectory.steps.order_by("k"))
        assert [s.feedback for s in steps] == [players.FEEDBACK, STOP_PHRASE]
        assert (trajectory.model_id, trajectory.rm_id) == ("mllm", "rm")
        assert trajectory.prompt_versions == prompt_versions()
    steps = TrajectoryStep.objects.filter(trajectory__run=run)
    assert steps.count() == 4 * 2 + 3
    # Every call went through the 10 ms server: each latency is at least that.
    assert all(s.m_latency_ms >= 10 and s.rm_latency_ms >= 10 for s in steps)
    assert TrajectoryChange.objects.filter(run=run, action="create").count() == 5
    latency = run.summary["latency"]
    assert latency["trajectories"] == 5 and latency["mean_steps"] == pytest.approx(11 / 5)
    assert run.summary["outcomes"] == {"accepted": 4, "max_steps": 1}
    assert "fgam.llm.trajectory_batch" in worker.log()


def test_a_local_llava_run_on_the_gpu_queue(start_celery_worker, tmp_path):
    from training.stage2.tiny import build_tiny_llava

    folder = str(build_tiny_llava(tmp_path / "llava"))
    dataset = questions(2)
    worker = start_celery_worker(
        "default", "gpu", env={"FGAM_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    )
    with LLMServer(responder=players.play) as server:
        run = start_trajectory_run(
            dataset=dataset,
            m=folder,
            rm=f"{server.url}#rm",
            k=1,
            max_new_tokens=6,
            seeded_errors=["attribute"],
        )
        run = wait_for_end(run, worker)

    assert run.parameters["queue"] == "gpu"
    assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 2, 0)
    for trajectory in Trajectory.objects.filter(run=run):
        assert trajectory.seeded_error == "attribute" and trajectory.model_id == folder
        step0, step1 = trajectory.steps.order_by("k")
        assert step0.response_by == "seeded:attribute" and step0.feedback == players.FEEDBACK
        assert step1.response_by == folder and step1.m_latency_ms > 0
    assert "fgam.gpu.trajectory_batch_local" in worker.log()
