"""A Table 2 study through real Celery workers on PostgreSQL and Redis: the gpu queue trains
and scores, the default queue advances the study when each job ends. Mid-study the worker is
killed (SIGKILL, with the trainer it was watching); a new worker and ``study retry`` finish the
study without redoing a finished step or doubling one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from django.test import Client

from tests.api.conftest import make_user
from tests.studies.conftest import study_spec
from webapp.benchmarks.models import BenchmarkJob
from webapp.core.roles import CURATOR
from webapp.exports.models import TrainingJob
from webapp.studies.models import Study
from webapp.studies.results import collect, table2
from webapp.studies.services import create_study, retry_study, start_study

DEADLINE_S = 600


def wait_for(predicate, what: str, worker, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{worker.log()[-4000:]}")


def kill_worker_and_its_children(worker) -> None:
    """SIGKILL the worker's processes and the trainers they started (their own sessions, so
    a process-group kill would miss them): what a machine that dies does to them."""
    root = psutil.Process(worker.process.pid)
    victims = [root, *root.children(recursive=True)]
    for process in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_table2_study_through_real_workers_survives_a_killed_worker(
    start_celery_worker, study_models, study_version, study_probe_set, tmp_path, settings
):
    runs, benches = tmp_path / "runs", tmp_path / "benchmarks"
    settings.FGAM_TRAINING_DIR, settings.FGAM_BENCHMARK_DIR = str(runs), str(benches)
    env = {"FGAM_TRAINING_DIR": str(runs), "FGAM_BENCHMARK_DIR": str(benches)}
    worker = start_celery_worker("gpu", "default", env=env)
    study = start_study(study=create_study(spec=study_spec("t2w", study_models, study_probe_set)))

    # Kill the worker while a hybrid run trains, after Stage-1 has finished.
    def hybrid_running_after_stage1():
        if not TrainingJob.objects.filter(kind="stage1", status="succeeded").exists():
            return None
        running = TrainingJob.objects.filter(kind="hybrid", status="running")
        return running.filter(metrics__isnull=False).first()

    victim = wait_for(hybrid_running_after_stage1, "a hybrid run under way", worker)
    finished_before = set(
        TrainingJob.objects.filter(status="succeeded").values_list("pk", flat=True)
    ) | set(BenchmarkJob.objects.filter(status="done").values_list("pk", flat=True))
    kill_worker_and_its_children(worker)
    # Nobody watches that job any more: it says "running" until someone fails it (a job's
    # watcher died with its worker; tasks are not acks_late, so nothing redelivers it).
    victim.refresh_from_db()
    assert victim.status == "running"
    TrainingJob.objects.filter(pk=victim.pk).update(status="failed", error="worker lost")
    from webapp.studies.services import advance

    advance(study.pk)  # what the job-finished hook would have done
    study.refresh_from_db()
    assert study.steps.filter(status="failed").count() == 1

    worker = start_celery_worker("gpu", "default", env=env)
    retry_study(study=study)
    wait_for(
        lambda: Study.objects.filter(pk=study.pk, status__in=["done", "failed"]).exists(),
        "the study to end", worker,
    )  # fmt: skip
    study.refresh_from_db()
    assert study.status == "done", list(study.steps.values_list("kind", "status", "error"))

    # Nothing finished before the kill was redone; the killed run is the only extra job.
    assert TrainingJob.objects.filter(kind="stage1").count() == 1
    assert TrainingJob.objects.filter(kind="hybrid").count() == 3
    assert TrainingJob.objects.filter(kind="hybrid", status="succeeded").count() == 2
    assert BenchmarkJob.objects.count() == 4
    linked = {step.job.pk for step in study.steps.all() if step.job is not None}
    assert finished_before <= linked  # the finished jobs are still the steps' jobs
    assert set(study.steps.values_list("status", flat=True)) == {"succeeded"}

    # The filled table equals each arm's metrics.json; the page and downloads show it.
    results = collect(study)
    table = table2(results)
    for arm, row in zip(results.arms, table.rows, strict=True):
        job = results.score(arm, study_probe_set.pk).step.benchmark_job
        metrics = json.loads((Path(job.out_dir) / "metrics.json").read_text())
        assert row[1].value == metrics["splits"]["all"]["pope"]["f1"]
    browser = Client()
    browser.force_login(make_user("cur", CURATOR))
    page = browser.get(f"/studies/{study.pk}/").content.decode()
    assert study.version.content_sha256 in page and 'id="study-grid"' in page
    assert page.count('data-testid="step-status"') == 2 + 3 + 4  # Stage-1, Stage-2, bench cells
    for fmt, first in (("csv", "Arm,"), ("md", "|"), ("tex", "\\begin")):
        body = browser.get(f"/studies/{study.pk}/table2.{fmt}").content.decode()
        assert first in body.splitlines()[0] or first in body, fmt
    api = browser.get(f"/api/studies/{study.pk}/").json()
    assert {s["arm"]: s["f1"] for s in api["scores"]} == {
        arm: results.score(arm, study_probe_set.pk).f1 for arm in results.arms
    }
