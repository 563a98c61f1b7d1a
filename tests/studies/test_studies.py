"""A whole Table 2 study in this process (eager tasks): the real ``python -m training`` runs
for every arm, the real scorer, the study's orchestration between them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from django.db import connection
from safetensors.torch import load_file

from tests.studies.conftest import study_spec
from webapp.benchmarks.models import BenchmarkJob
from webapp.exports.models import TrainingJob
from webapp.studies.models import Study, StudyStep
from webapp.studies.results import collect, table2
from webapp.studies.services import (
    StudyServiceError,
    advance,
    create_study,
    retry_study,
    start_study,
)


def tower_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The vision tower's tensors of a LLaVA checkpoint, keys without their prefixes."""
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    out = {}
    for key, value in state.items():
        if "vision_tower" in key:
            out[key.split("vision_tower.", 1)[1].removeprefix("vision_model.")] = value
    return out


def clip_vision_weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import CLIPVisionModel

    state = CLIPVisionModel.from_pretrained(folder).state_dict()
    return {k.removeprefix("vision_model."): v for k, v in state.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics_f1(job: BenchmarkJob) -> float:
    data = json.loads((Path(job.out_dir) / "metrics.json").read_text())
    return data["splits"]["all"]["pope"]["f1"]


@pytest.mark.django_db(transaction=True)
def test_a_table2_study_runs_every_arm_once_and_fills_the_table_from_metrics_json(
    study_models, study_version, study_probe_set, study_dirs
):
    spec = study_spec("t2", study_models, study_probe_set)
    study = create_study(spec=spec)
    assert [s.kind for s in study.steps.order_by("position")] == [
        "stage1", "hybrid", "tower", "hybrid", "bench", "bench", "bench", "bench",
    ]  # fmt: skip
    study = start_study(study=study)
    study.refresh_from_db()
    steps = {(s.kind, *s.arms): s for s in study.steps.all()}
    assert study.status == "done", [(s.key[:8], s.kind, s.status, s.error) for s in steps.values()]
    # Shared arms trained once: one Stage-1 run for "w/o Stage-2" and "full".
    assert TrainingJob.objects.filter(kind="stage1").count() == 1
    assert TrainingJob.objects.filter(kind="hybrid").count() == 2
    assert BenchmarkJob.objects.count() == 4
    stage1 = TrainingJob.objects.get(kind="stage1")
    assert steps[("stage1", "no_stage2", "full")].training_job == stage1

    # The Stage-2 arms of the Stage-1 row hold that Stage-1 checkpoint's tower, exactly.
    stage1_tower = clip_vision_weights(Path(stage1.checkpoint_dir) / "hf")
    full = steps[("hybrid", "full")].training_job
    assert same(tower_weights(Path(full.checkpoint_dir)), stage1_tower)
    assert same(tower_weights(Path(steps[("tower", "no_stage2")].out_dir) / "final"), stage1_tower)
    assert f"{stage1.out_dir}/final" in full.command[-40:].__str__()
    # ... and the arm without Stage-1 kept M's own tower.
    base_tower = tower_weights(study_models["llava"])
    assert same(
        tower_weights(Path(steps[("hybrid", "no_stage1")].training_job.checkpoint_dir)), base_tower
    )
    assert not same(base_tower, stage1_tower)

    # Every number of the table is the scorer's metrics.json for that arm.
    results = collect(study)
    table = table2(results)
    base_f1 = None
    for arm, row in zip(results.arms, table.rows, strict=True):
        bench = results.score(arm, study_probe_set.pk).step.benchmark_job
        assert row[1].value == metrics_f1(bench), arm
        if arm == "base":
            base_f1 = row[1].value
            assert bench.model_spec == str(study_models["llava"])
        else:
            assert row[2].value == pytest.approx(metrics_f1(bench) - base_f1)
            assert row[3].value is not None and 0 <= row[3].value <= 1  # McNemar p
    csv = table.to_csv().splitlines()
    assert csv[0].startswith("Arm,study-pope F1 ↑,study-pope F1 CI low")
    assert len(csv) == 5

    # Advancing again starts nothing; start refuses a done study.
    assert advance(study.pk) == []
    with pytest.raises(StudyServiceError, match="done"):
        start_study(study=study)
    assert TrainingJob.objects.count() == 3 and BenchmarkJob.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_failed_arm_is_retried_alone_and_finished_steps_are_kept(
    study_models, study_version, study_probe_set, study_dirs, tmp_path
):
    rm = study_models["rm"]
    spec = study_spec("retry", {**study_models, "rm": tmp_path / "rm-later"}, study_probe_set,
                      arms=["base", "full"])  # fmt: skip
    study = start_study(study=create_study(spec=spec))
    study.refresh_from_db()
    assert study.status == "failed"
    hybrid = study.steps.get(kind="hybrid")
    assert hybrid.status == "failed" and "rm" in hybrid.error.lower()
    assert study.steps.get(kind="bench", arms=["full"]).status == "blocked"
    assert study.steps.get(kind="bench", arms=["base"]).status == "succeeded"

    # Starting a failed study again retries its failed step (and only that one).
    study = start_study(study=study)
    assert study.status == "failed"
    assert TrainingJob.objects.filter(kind="hybrid", status="failed").count() == 2
    assert TrainingJob.objects.filter(kind="stage1").count() == 1

    # The RM arrives; retry the arm: only its failed step runs again.
    import shutil

    shutil.copytree(rm, tmp_path / "rm-later")
    with pytest.raises(StudyServiceError, match="no arm 'nope'"):
        retry_study(study=study, arm="nope")
    old_job = hybrid.training_job
    call_command("study", "retry", "retry", "--arm", "full")
    study.refresh_from_db()
    assert study.status == "done", list(study.steps.values_list("kind", "status", "error"))
    assert TrainingJob.objects.filter(kind="stage1").count() == 1  # not redone
    assert TrainingJob.objects.filter(kind="hybrid").count() == 3  # the failed ones stay
    assert study.steps.get(kind="hybrid").training_job != old_job
    assert BenchmarkJob.objects.filter(model_spec=str(study_models["llava"])).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_and_repeated_advances_start_each_step_once(
    study_models, study_version, study_probe_set, study_dirs, settings
):
    """Four advances at once (four connections, as four workers), then more after a "crash"
    that left the study running: every step has at most one job."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (SQLite serialises the whole database)")
    from webapp import celery_app

    # A broker nobody consumes: the jobs are queued and stay queued, as with a dead worker.
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "memory://localhost/"
    try:
        study = create_study(spec=study_spec("race", study_models, study_probe_set))
        Study.objects.filter(pk=study.pk).update(status="running")
        errors = []

        def run():
            try:
                advance(study.pk)
            except Exception as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        for _ in range(3):
            advance(study.pk)
        started = study.steps.exclude(status="pending")
        # stage1, the hybrid without Stage-1, and the base arm's bench need nothing.
        assert sorted(started.values_list("kind", flat=True)) == ["bench", "hybrid", "stage1"]
        assert TrainingJob.objects.count() == 2 and BenchmarkJob.objects.count() == 1
        assert set(StudyStep.objects.values_list("status", flat=True)) == {"pending", "queued"}
    finally:
        celery_app.conf.task_always_eager = saved
