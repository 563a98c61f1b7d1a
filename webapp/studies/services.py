"""Creating, starting, advancing and retrying studies.

``create_study`` checks ``study.json`` with ``training.studies`` (the same checks as
``python -m training study-plan``), resolves its probe sets to ``ProbeSet`` rows and stores the
plan as ``StudyStep`` rows. ``advance`` is the whole orchestration, and it is idempotent:

- it locks the study row (``select_for_update``), so two advances of one study, from two
  workers or a worker and a web request, run one after the other and the second sees the jobs
  the first started: no step ever gets two jobs;
- it copies each step's job status into the step, marks steps whose needs failed ``blocked``
  (and back to ``pending`` once they are retried), and starts every pending step whose needs
  all succeeded and that has no job yet: training steps through
  ``webapp.exports.training_jobs.start_training_job`` (``@step:KEY/final`` references replaced
  by that step's run folder), bench steps through ``webapp.benchmarks.services.start_benchmark``
  (a training step's final checkpoint, or the base model as it is);
- the job rows and the step links are written in the same transaction, and the jobs are
  enqueued on commit: a crash in between leaves neither, and the next advance starts them.

It runs when a study starts and whenever one of its jobs finishes (``webapp.core.job_events``,
registered in ``StudiesConfig.ready``; it enqueues ``fgam.default.advance_study``). A step with a
succeeded job is never started again; ``retry`` only unlinks failed steps' jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from training.studies.spec import StudyError, study_from_dict
from webapp.benchmarks.models import BenchmarkJob
from webapp.benchmarks.services import BenchmarkError, start_benchmark
from webapp.exports.models import DatasetVersion, TrainingJob
from webapp.exports.training_jobs import TrainingJobError, start_training_job
from webapp.probes.models import ProbeSet
from webapp.studies.models import JOB_STATUS, Study, StudyStep

# The plan's step kinds and the training-job kind each runs as.
TRAINING_KINDS = {
    "stage1": TrainingJob.Kind.STAGE1,
    "sft": TrainingJob.Kind.SFT,
    "rl": TrainingJob.Kind.RL,
    "hybrid": TrainingJob.Kind.HYBRID,
}
# Scorer options a BenchmarkJob holds; the plan's other bench settings (device, dtype) are the
# worker's business.
BENCH_FIELDS = ("batch_size", "concurrency", "max_new_tokens", "limit")


class StudyServiceError(ValueError):
    """A study that cannot be created, started or retried as asked; the message says why."""


# --- Creating ----------------------------------------------------------------------------------


def find_version(ref: str) -> DatasetVersion | None:
    """A version by id or name (what a study file's ``version`` holds in the web app)."""
    ref = str(ref).strip()
    if ref.isdigit():
        found = DatasetVersion.objects.filter(pk=int(ref)).first()
        if found is not None:
            return found
    return (
        DatasetVersion.objects.filter(name=ref).first()
        or DatasetVersion.objects.filter(location=ref).first()
    )


def find_probe_set(ref: str) -> ProbeSet | None:
    """A probe set by id, set id or folder."""
    ref = str(ref).strip()
    if ref.isdigit():
        found = ProbeSet.objects.filter(pk=int(ref)).first()
        if found is not None:
            return found
    return (
        ProbeSet.objects.filter(set_id=ref).first()
        or ProbeSet.objects.filter(path=ref).first()
        or ProbeSet.objects.filter(path=str(Path(ref).resolve())).first()
    )


def create_study(
    *, spec: dict[str, Any], version: DatasetVersion | None = None, created_by=None
) -> Study:
    """Check ``spec`` (a ``study.json`` object), plan it and store the study as a draft."""
    from training.studies.plan import plan_study

    if not isinstance(spec, dict):
        raise StudyServiceError("a study is one JSON object")
    spec = dict(spec)
    if version is not None:
        spec["version"] = str(version.pk)
    try:
        checked = study_from_dict(spec)
    except StudyError as err:
        raise StudyServiceError(str(err)) from err
    if version is None:
        version = find_version(checked.version)
        if version is None:
            raise StudyServiceError(f"no dataset version {checked.version!r} (an id or a name)")
    if not version.is_ready:
        raise StudyServiceError(f"version {version.name} is {version.status}, not ready")
    if Study.objects.filter(name=checked.name).exists():
        raise StudyServiceError(f"a study named {checked.name!r} exists already")
    probe_sets = {}
    for ref in checked.probe_sets:
        found = find_probe_set(ref)
        if found is None or not found.is_ready:
            raise StudyServiceError(f"probe set {ref!r} is not a ready probe set (id or set id)")
        probe_sets[ref] = found
    if not probe_sets:
        raise StudyServiceError("the study names no probe set to score its arms on")
    round_ = None
    if checked.round:
        from webapp.evaluation.models import Round

        round_ = Round.objects.filter(name=checked.round).first()
        if round_ is None:
            raise StudyServiceError(f"no evaluation round named {checked.round!r}")
    try:
        steps = plan_study(checked)
    except StudyError as err:
        raise StudyServiceError(str(err)) from err
    with transaction.atomic():
        study = Study.objects.create(
            name=checked.name, version=version, spec=spec, evaluation_round=round_,
            created_by=created_by,
        )  # fmt: skip
        StudyStep.objects.bulk_create(
            [
                StudyStep(
                    study=study,
                    key=step.key,
                    kind=step.kind,
                    position=n,
                    config=dict(step.config or {}),
                    needs=list(step.needs or ()),
                    arms=list(step.arms or ()),
                    model_from=str(getattr(step, "model_from", "") or ""),
                    probe_set=_step_probe_set(step, probe_sets),
                )
                for n, step in enumerate(steps)
            ]
        )
    return study


def _step_probe_set(step: Any, probe_sets: dict[str, ProbeSet]) -> ProbeSet | None:
    probes = getattr(step, "probes", None)
    if isinstance(probes, list | tuple):
        probes = probes[0] if probes else None
    if not probes:
        return None
    return probe_sets.get(str(probes)) or find_probe_set(str(probes))


# --- Starting and advancing --------------------------------------------------------------------


def start_study(*, study: Study) -> Study:
    """Start a draft study, or restart a failed one: its failed steps get new jobs (as with
    ``retry``), and a step that already succeeded is kept."""
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(pk=study.pk)
        if locked.status == Study.Status.RUNNING:
            raise StudyServiceError(f"study {locked.name} is running already")
        if locked.status == Study.Status.DONE:
            raise StudyServiceError(f"study {locked.name} is done; every step succeeded")
        if locked.status == Study.Status.FAILED:
            _unlink(list(locked.steps.filter(status=StudyStep.Status.FAILED)))
        Study.objects.filter(pk=locked.pk).update(
            status=Study.Status.RUNNING, error="", started_at=locked.started_at or timezone.now(),
            finished_at=None,
        )  # fmt: skip
    advance(study.pk)
    study.refresh_from_db()
    return study


def retry_study(*, study: Study, arm: str = "") -> list[StudyStep]:
    """Unlink the failed steps' jobs (of one arm, or all) so the next advance starts them anew;
    the old jobs stay, with their logs. Returns the steps retried."""
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(pk=study.pk)
        steps = list(locked.steps.filter(status=StudyStep.Status.FAILED))
        if arm:
            # In Python, not ``arms__contains``: SQLite has no JSON containment.
            if not any(arm in arms for arms in locked.steps.values_list("arms", flat=True)):
                raise StudyServiceError(f"study {locked.name} has no arm {arm!r}")
            steps = [s for s in steps if arm in s.arms]
        if not steps:
            raise StudyServiceError(
                f"study {locked.name} has no failed step" + (f" in arm {arm!r}" if arm else "")
            )
        _unlink(steps)
        Study.objects.filter(pk=locked.pk).update(
            status=Study.Status.RUNNING, error="", finished_at=None
        )
    advance(study.pk)
    return steps


def _unlink(steps: list[StudyStep]) -> None:
    for step in steps:
        step.training_job = None
        step.benchmark_job = None
        step.status = StudyStep.Status.PENDING
        step.error = ""
        step.save(update_fields=["training_job", "benchmark_job", "status", "error"])


def advance(study_id: int) -> list[StudyStep]:
    """Bring the study's steps up to date and start every step that can start; the steps
    started. Safe to call any number of times, concurrently too (see the module docstring)."""
    started: list[StudyStep] = []
    with transaction.atomic():
        study = Study.objects.select_for_update().filter(pk=study_id).first()
        if study is None:
            return started
        steps = list(
            study.steps.select_related("training_job", "benchmark_job", "probe_set").order_by(
                "position"
            )
        )
        by_key = {step.key: step for step in steps}
        for step in steps:
            _sync(step)
        if study.status == Study.Status.RUNNING:
            for step in steps:  # the plan's order is a dependency order
                if step.job is not None or step.status not in _WAITING:
                    continue
                needs = [by_key[k] for k in step.needs if k in by_key]
                broken = [n for n in needs if n.status in _BROKEN]
                status = StudyStep.Status.BLOCKED if broken else StudyStep.Status.PENDING
                if status != step.status:
                    _save(step, status=status)
                if broken or any(n.status != StudyStep.Status.SUCCEEDED for n in needs):
                    continue
                _start_step(study, step, by_key)
                if step.job is not None:
                    started.append(step)
        _update_study(study, steps)
    return started


_WAITING = (StudyStep.Status.PENDING, StudyStep.Status.BLOCKED)
_BROKEN = (StudyStep.Status.FAILED, StudyStep.Status.BLOCKED)


def _sync(step: StudyStep) -> None:
    """Copy the step's job status into the step."""
    job = step.job
    if job is None:
        return
    job.refresh_from_db(fields=["status", "error"])
    status = step_status_of(job)
    error = job.error if status == StudyStep.Status.FAILED else ""
    if status != step.status or error != step.error:
        _save(step, status=status, error=error)


def step_status_of(job: TrainingJob | BenchmarkJob) -> str:
    return JOB_STATUS.get(job.status, StudyStep.Status.QUEUED)


def _save(step: StudyStep, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(step, name, value)
    step.save(update_fields=list(changes))


def _start_step(study: Study, step: StudyStep, by_key: dict[str, StudyStep]) -> None:
    """Start the step's job, or mark the step failed with the reason it cannot start."""
    try:
        if step.kind in TRAINING_KINDS:
            config = resolve_references(step.config, by_key)
            job = start_training_job(
                version=study.version, kind=str(TRAINING_KINDS[step.kind]), config=config,
                created_by=study.created_by,
            )  # fmt: skip
            _save(step, training_job=job, status=StudyStep.Status.QUEUED, error="",
                  attempts=step.attempts + 1)  # fmt: skip
        elif step.kind == "bench":
            bench = start_bench_step(study, step, by_key)
            _save(step, benchmark_job=bench, status=StudyStep.Status.QUEUED, error="",
                  attempts=step.attempts + 1)  # fmt: skip
        elif step.kind == "tower":
            start_tower_step(study, step, by_key)
        else:
            raise StudyServiceError(f"step {step.key}: unknown step kind {step.kind!r}")
    except (TrainingJobError, BenchmarkError, StudyServiceError) as err:
        _save(step, status=StudyStep.Status.FAILED, error=str(err), attempts=step.attempts + 1)


def run_dir_of(by_key: dict[str, StudyStep]):
    """``plan.resolve_references``'s lookup: a step key -> its run folder, once it has one."""

    def lookup(key: str) -> str:
        source = by_key.get(key)
        folder = source.run_dir if source is not None else ""
        if not folder:
            raise StudyServiceError(f"step {key[:12]} has no run folder yet")
        return folder

    return lookup


def resolve_references(config: dict[str, Any], by_key: dict[str, StudyStep]) -> dict[str, Any]:
    """``config`` with every ``@step:KEY/final`` replaced by that step's run folder plus
    ``/final`` (``<runs>/job-000012/final``)."""
    from training.studies.plan import resolve_references as resolve

    return resolve(config, run_dir_of(by_key))


def start_tower_step(study: Study, step: StudyStep, by_key: dict[str, StudyStep]) -> None:
    """A tower step runs ``python -m training swap-tower`` on the gpu queue (no job row: it
    trains nothing and takes seconds); its folder sits next to the training jobs'."""
    from django.conf import settings

    config = resolve_references(step.config, by_key)
    out = Path(settings.FGAM_TRAINING_DIR) / f"study-{study.pk:04d}-tower-{step.key[:12]}"
    _save(step, config=config, out_dir=str(out), status=StudyStep.Status.QUEUED, error="",
          log_tail="", attempts=step.attempts + 1)  # fmt: skip
    step_id = step.pk
    transaction.on_commit(lambda: _enqueue_tower(step_id))


def _enqueue_tower(step_id: int) -> None:
    from webapp.studies.tasks import swap_tower

    swap_tower.delay(step_id)


def start_bench_step(study: Study, step: StudyStep, by_key: dict[str, StudyStep]) -> BenchmarkJob:
    if step.probe_set is None:
        raise StudyServiceError(f"step {step.key}: no probe set")
    options = {k: step.config[k] for k in BENCH_FIELDS if step.config.get(k)}
    source = by_key.get(step.model_from) if step.model_from else None
    if source is not None and source.training_job is not None:
        return start_benchmark(
            probe_set=step.probe_set, training_job=source.training_job,
            created_by=study.created_by, **options,
        )  # fmt: skip
    if step.model_from and source is None:
        raise StudyServiceError(f"step {step.key}: model_from {step.model_from!r} is no step")
    # The base model as it is, or a tower step's final/ (no job to name: a folder spec).
    model = str(resolve_references({"model": step.config.get("model", "")}, by_key)["model"])
    return start_benchmark(
        probe_set=step.probe_set, model_spec=model, created_by=study.created_by, **options
    )


def _update_study(study: Study, steps: list[StudyStep]) -> None:
    statuses = {step.status for step in steps}
    if study.status != Study.Status.RUNNING:
        return
    if statuses == {StudyStep.Status.SUCCEEDED}:
        Study.objects.filter(pk=study.pk).update(
            status=Study.Status.DONE, finished_at=timezone.now()
        )
    elif not statuses & {
        StudyStep.Status.QUEUED,
        StudyStep.Status.RUNNING,
        StudyStep.Status.PENDING,
    }:
        failed = [s.key for s in steps if s.status == StudyStep.Status.FAILED]
        Study.objects.filter(pk=study.pk).update(
            status=Study.Status.FAILED,
            error=f"failed: {', '.join(failed)}; retry them with `study retry`",
            finished_at=timezone.now(),
        )


# --- Job-finished hook -------------------------------------------------------------------------


def studies_of_job(kind: str, job_id: int) -> list[int]:
    """The studies with a step on this training or benchmark job."""
    field = "training_job_id" if kind == "training" else "benchmark_job_id"
    return list(
        StudyStep.objects.filter(**{field: job_id}).values_list("study_id", flat=True).distinct()
    )


def on_job_finished(kind: str, job_id: int) -> None:
    """``webapp.core.job_events`` callback: advance the job's studies on the default queue."""
    from webapp.studies.tasks import advance_study

    for study_id in studies_of_job(kind, job_id):
        advance_study.delay(study_id)
