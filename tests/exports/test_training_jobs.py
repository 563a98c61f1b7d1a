"""Training jobs from a version: the real ``python -m training stage1`` with a tiny model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.test import Client

from tests.api.conftest import make_user
from tests.exports.conftest import TINY_JOB
from webapp.core.roles import CURATOR
from webapp.exports.models import TrainingJob, TrainingMetric
from webapp.exports.services import cut_version, export_version
from webapp.exports.training_jobs import (
    TrainingJobError,
    cancel_training_job,
    command_for,
    default_config,
    start_training_job,
)


def ready_version(tmp_path):
    version = cut_version(datasets=["street"], out_dir=tmp_path / "versions", enqueue=False)
    return export_version(version_id=version.pk)


@pytest.mark.django_db
def test_a_stage1_job_runs_in_process_and_its_losses_reach_the_page(
    reviewed, tiny_clip, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        job = start_training_job(version=version, config={**TINY_JOB, "model": str(tiny_clip)})
    job.refresh_from_db()
    assert job.status == "succeeded", job.log_tail
    assert job.command[1:5] == ["-m", "training", "stage1", "--data"]
    lines = list(TrainingMetric.objects.filter(job=job).order_by("line"))
    assert [m.step for m in lines] == [1, 2, 3, 4]
    assert {"loss", "itcl_loss", "rtcl_loss", "scc_loss", "lr"} <= lines[0].values.keys()
    assert job.last_step == 4

    browser = Client()
    browser.force_login(make_user("cur", CURATOR))
    html = browser.get(f"/versions/jobs/{job.pk}/").content.decode()
    assert 'data-term="rtcl_loss"' in html and "<polyline" in html
    assert job.checkpoint_dir in html
    assert f"/versions/jobs/{job.pk}/" in browser.get(f"/versions/{version.pk}/").content.decode()


@pytest.mark.django_db
def test_bad_configs_kinds_and_presets_are_refused(reviewed, tmp_path, settings):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    with pytest.raises(TrainingJobError, match="unknown config key 'batchsize'"):
        start_training_job(version=version, config={"batchsize": 3})
    with pytest.raises(TrainingJobError, match="unknown config key 'lrr'"):
        start_training_job(version=version, kind="stage2_sft", config={"lrr": 3})
    with pytest.raises(TrainingJobError, match="lora"):
        start_training_job(version=version, kind="rm", config={"lora": "maybe"})
    with pytest.raises(TrainingJobError, match="unknown kind 'dance'"):
        start_training_job(version=version, kind="dance")
    with pytest.raises(TrainingJobError, match="names a preset"):
        start_training_job(version=version, kind="ablation")
    with pytest.raises(TrainingJobError, match="unknown preset 'nope'"):
        start_training_job(version=version, kind="ablation", preset="nope")
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "command", "config_class", "needs"),
    [
        ("stage2_sft", "sft", "training.stage2.config.SFTConfig", {}),
        ("rm", "rm", "training.stage2.config.RMConfig", {}),
        # RL checks its own rules too: the reward's RM must be named.
        ("rl", "rl", "training.stage2.config.RLConfig", {"rm": "/models/rm"}),
    ],
)
def test_stage2_kinds_run_their_entry_point_with_training_defaults(
    reviewed, tmp_path, settings, kind, command, config_class, needs
):
    import dataclasses
    import importlib

    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    module, name = config_class.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    defaults = default_config(kind)
    assert defaults == json.loads(json.dumps(dataclasses.asdict(cls()), default=str))
    job = start_training_job(version=version, kind=kind, config={"max_steps": 3, **needs}, gpus=2)
    assert job.config == {"max_steps": 3, **needs}  # only what differs from the defaults
    cmd = command_for(job, Path(version.location))
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "-m"]
    assert cmd[6:9] == ["training", command, "--data"] and "max_steps=3" in cmd[-2:]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_gpu_queue_worker_streams_metrics_into_the_database(
    start_celery_worker, reviewed, tiny_clip, tmp_path
):
    runs = tmp_path / "runs"
    worker = start_celery_worker("gpu", "default", env={"FGAM_TRAINING_DIR": str(runs)})
    version = ready_version(tmp_path)
    config = {**TINY_JOB, "model": str(tiny_clip), "max_steps": 30, "log_every": 2}
    from django.conf import settings

    settings.FGAM_TRAINING_DIR = str(runs)
    job = start_training_job(version=version, config=config)
    deadline = time.monotonic() + 240
    seen_while_running = False
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == "running" and job.metrics.exists():
            seen_while_running = True
        if job.status in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert job.status == "succeeded", job.log_tail + worker.log()
    assert seen_while_running  # metrics arrived live, not only at the end
    assert [m.step for m in job.metrics.order_by("line")] == list(range(2, 31, 2))


@pytest.mark.django_db
def test_cancel_stops_queued_jobs_at_once_and_asks_running_ones_to_stop(
    reviewed, tmp_path, settings
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    queued = start_training_job(version=version)  # its task waits for a commit that never comes
    assert cancel_training_job(job=queued).status == "cancelled"
    running = TrainingJob.objects.create(version=version, status="running")
    assert cancel_training_job(job=running).status == "cancelling"
    with pytest.raises(TrainingJobError, match="only open jobs"):
        cancel_training_job(job=queued)


@pytest.mark.django_db
def test_the_api_starts_a_job_with_edited_config_and_refuses_bad_keys(reviewed, tmp_path, settings):
    from rest_framework.test import APIClient

    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    api = APIClient()
    api.force_login(make_user("cur", CURATOR))
    bad = api.post(
        "/api/training-jobs/", {"version": version.pk, "config": {"lrr": 1}}, format="json"
    )
    assert bad.status_code == 400 and "lrr" in str(bad.json())
    made = api.post(
        "/api/training-jobs/",
        {"version": version.pk, "kind": "ablation", "preset": "itcl_only", "config": {"lr": 2e-5}},
        format="json",
    )
    assert made.status_code == 201, made.content
    job = TrainingJob.objects.get(pk=made.json()["id"])
    assert job.preset == "itcl_only" and job.config["lr"] == 2e-5 and job.config["beta"] == 0.0
    assert api.post(f"/api/training-jobs/{job.pk}/cancel/").json()["status"] == "cancelled"
    assert api.post(f"/api/training-jobs/{job.pk}/cancel/").status_code == 409


@pytest.mark.django_db
def test_train_on_export_starts_a_job_once_the_version_is_ready(
    reviewed, tiny_clip, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    config = {**TINY_JOB, "model": str(tiny_clip), "max_steps": 2}
    with django_capture_on_commit_callbacks(execute=True):
        version = cut_version(
            datasets=["street"],
            out_dir=tmp_path / "versions",
            train_on_ready={"kind": "stage1", "config": config},
        )
    job = TrainingJob.objects.get(version=version)
    assert job.status == "succeeded", job.log_tail
    assert job.metrics.count() == 2


@pytest.mark.django_db
def test_a_job_whose_program_cannot_start_fails_with_the_reason(
    reviewed, tmp_path, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    missing = str(tmp_path / "no-such-python")
    monkeypatch.setattr(
        "webapp.exports.training_jobs.command_for", lambda job, data: [missing, "-m", "training"]
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = start_training_job(version=version, config=dict(TINY_JOB))
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("could not start:") and "no-such-python" in job.error


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A tiny random LLaVA saved with save_pretrained (``training/stage2/tiny.py``)."""
    from training.stage2.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_gpu_queue_worker_runs_stage2_sft_on_a_version_and_streams_metrics(
    start_celery_worker, trajectories, tiny_llava, tmp_path
):
    """Trajectories reviewed in the app, cut into a version, trained on by
    ``python -m training sft`` through a real worker: the loss lines arrive in the database."""
    from django.conf import settings

    runs = tmp_path / "runs"
    worker = start_celery_worker("gpu", "default", env={"FGAM_TRAINING_DIR": str(runs)})
    version = ready_version(tmp_path)
    assert version.counts["sft"] == 2
    settings.FGAM_TRAINING_DIR = str(runs)
    config = {"model": str(tiny_llava), "max_steps": 6, "log_every": 1, "batch_size": 1,
              "grad_accum": 1, "warmup_steps": 0, "device": "cpu"}  # fmt: skip
    job = start_training_job(version=version, kind="stage2_sft", config=config)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert job.status == "succeeded", job.log_tail + worker.log()
    assert job.command[2:5] == ["training", "sft", "--data"]
    steps = [m.step for m in job.metrics.order_by("line")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all("loss" in m.values for m in job.metrics.all())
    assert (Path(job.out_dir) / "final").is_dir()


@pytest.mark.django_db
def test_hybrid_jobs_and_the_figure_2_ablations_check_each_phase(reviewed, tmp_path, settings):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    defaults = default_config("hybrid")
    assert defaults["preset"] == "hybrid"
    assert defaults["sft.lr"] == default_config("stage2_sft")["lr"]
    assert defaults["rl.lr"] == default_config("rl")["lr"]
    with pytest.raises(TrainingJobError, match="rm= is required"):
        start_training_job(version=version, kind="hybrid", config={"sft.max_steps": 2})
    with pytest.raises(TrainingJobError, match="unknown config key 'lrr'"):
        start_training_job(version=version, kind="hybrid", config={"lrr": 1})
    job = start_training_job(
        version=version, kind="hybrid", config={"sft.max_steps": 2, "rl.rm": "/models/rm"}
    )
    assert job.config == {"sft.max_steps": 2, "rl.rm": "/models/rm"}
    assert command_for(job, Path("/v"))[3:4] == ["hybrid"]
    # Figure 2's SFT-only arm: the hybrid command with its preset, no RM needed.
    ablation = start_training_job(version=version, kind="ablation", preset="sft_only")
    cmd = command_for(ablation, Path("/v"))
    assert cmd[3] == "hybrid" and "preset=sft_only" in cmd
    assert ablation.preset == "sft_only"
    stage1 = start_training_job(version=version, kind="ablation", preset="itcl_only")
    assert command_for(stage1, Path("/v"))[3] == "stage1"
