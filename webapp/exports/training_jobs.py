"""Training jobs: ``python -m training ...`` on an exported version, metrics streamed back.

``start_training_job`` checks the config with ``training.config.resolve`` against the kind's
own config class (``training.kinds.KINDS``: Stage-1, Stage-2 SFT, RM, RL, hybrid SFT→RL; a
named ablation is a preset of Stage-1 or of hybrid) and enqueues ``fgam.gpu.train``.
``run_training_job`` (the task body) runs the trainer as a subprocess (``torchrun`` for several
GPUs), reads each new line of the run's ``metrics.jsonl`` into ``TrainingMetric`` rows while it
runs, keeps the end of the log, and stops the process when the job is cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.config import resolve
from training.kinds import KINDS
from training.stage2.config import HybridConfig
from webapp.core.job_events import TRAINING, job_finished
from webapp.core.subprocesses import CouldNotStart, run_watched
from webapp.exports.models import DatasetVersion, TrainingJob, TrainingMetric
from webapp.exports.storage import local_path

log = logging.getLogger(__name__)

POLL_S = 1.0
LOG_TAIL_CHARS = 8000

# The ``python -m training`` command (a key of ``KINDS``) each kind of job runs.
COMMANDS = {
    TrainingJob.Kind.STAGE1: "stage1",
    TrainingJob.Kind.SFT: "sft",
    TrainingJob.Kind.RM: "rm",
    TrainingJob.Kind.RL: "rl",
    TrainingJob.Kind.HYBRID: "hybrid",
}
# A named ablation is the kind whose presets hold the name: Stage-1's loss-term ablations
# (itcl_only, ...) or Stage-2's Figure-2 comparison (sft_only, rl_only, hybrid).
ABLATION_KINDS = (TrainingJob.Kind.STAGE1, TrainingJob.Kind.HYBRID)


class TrainingJobError(ValueError):
    """A job that cannot be started or changed as asked; the message says why."""


def _config_class(kind: str) -> type:
    return KINDS[COMMANDS[_ablation_target(kind) if kind == TrainingJob.Kind.ABLATION else kind]]


def _ablation_target(kind: str, preset: str = "") -> str:
    for candidate in ABLATION_KINDS:
        if not preset or preset in KINDS[COMMANDS[candidate]].PRESETS:
            return candidate
    return TrainingJob.Kind.STAGE1


def ablation_presets() -> dict[str, str]:
    """Every named ablation and the kind that runs it, for the form's hint and the API."""
    out: dict[str, str] = {}
    for kind in ABLATION_KINDS:
        for name in KINDS[COMMANDS[kind]].PRESETS:
            out.setdefault(name, kind)
    return out


def default_config(kind: str = TrainingJob.Kind.STAGE1) -> dict[str, Any]:
    """The editable defaults of a kind, from its ``training/`` config class."""
    cls = _config_class(kind)
    if cls is HybridConfig:
        return _hybrid_defaults()
    return _as_dict(cls())


def _hybrid_defaults() -> dict[str, Any]:
    """Hybrid SFT→RL: the preset, then every SFT key as ``sft.KEY`` and every RL key as
    ``rl.KEY`` (each phase has its own defaults, e.g. the learning rate)."""
    sft, rl = default_config(TrainingJob.Kind.SFT), default_config(TrainingJob.Kind.RL)
    return {
        "preset": "hybrid",
        **{f"sft.{k}": v for k, v in sft.items()},
        **{f"rl.{k}": v for k, v in rl.items()},
    }


def _hybrid_keys(config: HybridConfig) -> dict[str, Any]:
    """A resolved hybrid config as the ``sft.KEY`` / ``rl.KEY`` pairs its command line takes
    (no ``rl.`` keys when the preset runs no RL phase)."""
    out: dict[str, Any] = {"preset": config.preset}
    for phase, part in (("sft", config.sft), ("rl", config.rl)):
        if part is not None:
            out.update({f"{phase}.{k}": v for k, v in _as_dict(part).items()})
    return out


def _as_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def resolve_config(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The full config of a job, checked by ``training/``'s own rules; ``TrainingJobError``
    names a bad key or value."""
    try:
        config = resolve(_config_class(kind), {}, overrides)
    except (ValueError, TypeError) as err:  # training/'s ConfigError is a ValueError
        raise TrainingJobError(str(err)) from err
    if isinstance(config, HybridConfig):
        return _hybrid_keys(config)
    return _as_dict(config)


def start_training_job(
    *,
    version: DatasetVersion,
    kind: str = TrainingJob.Kind.STAGE1,
    preset: str = "",
    config: dict[str, Any] | None = None,
    gpus: int = 1,
    created_by=None,
) -> TrainingJob:
    """Check the job against ``training/``'s config rules and enqueue it on the gpu queue.

    An ablation names a preset; the kind whose presets hold it runs it (Stage-1's loss-term
    ablations, or Stage-2's sft_only / rl_only / hybrid comparison).
    """
    if kind not in TrainingJob.Kind.values:
        raise TrainingJobError(f"unknown kind {kind!r}; one of {', '.join(TrainingJob.Kind)}")
    if not version.is_ready:
        raise TrainingJobError(f"version {version.name} is {version.status}, not ready")
    if local_path(version) is None:
        raise TrainingJobError(f"version {version.name} is not on a local filesystem")
    if not 1 <= int(gpus) <= 64:
        raise TrainingJobError("gpus must be between 1 and 64")
    overrides = {k: v for k, v in (config or {}).items() if v is not None}
    runs_as = kind
    if kind == TrainingJob.Kind.ABLATION:
        presets = ablation_presets()
        if not preset:
            raise TrainingJobError(
                f"an ablation names a preset ({', '.join(presets) or 'none is defined'})"
            )
        if preset not in presets:
            raise TrainingJobError(f"unknown preset {preset!r}; one of {', '.join(presets)}")
        runs_as = presets[preset]
    if preset:
        overrides["preset"] = preset
    resolved = resolve_config(runs_as, overrides)
    defaults = default_config(runs_as)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            version=version,
            kind=kind,
            preset=str(resolved.get("preset", preset) or ""),
            # Only values that differ from the defaults: the command line stays short.
            config={k: v for k, v in resolved.items() if defaults.get(k, object()) != v},
            gpus=int(gpus),
            created_by=created_by,
        )
        job.out_dir = str(Path(settings.FGAM_TRAINING_DIR) / f"job-{job.pk:06d}")
        job.save(update_fields=["out_dir"])
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from webapp.exports.tasks import train

    result = train.delay(job_id)
    TrainingJob.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def command_for(job: TrainingJob, data: Path) -> list[str]:
    """``python -m training <command> --data DIR --out DIR key=value ...``; ``torchrun`` (as
    ``python -m torch.distributed.run``) with one process per GPU when ``gpus > 1``."""
    kind = job.kind
    if kind == TrainingJob.Kind.ABLATION:
        kind = _ablation_target(kind, job.preset)
    entry = COMMANDS[kind]
    args = [entry, "--data", str(data), "--out", job.out_dir]
    args += [f"{k}={_cli_value(v)}" for k, v in sorted(job.config.items())]
    if job.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                str(job.gpus), "-m", "training", *args]  # fmt: skip
    return [sys.executable, "-m", "training", *args]


def _cli_value(value: Any) -> str:
    """key=value text that ``training/``'s coercion reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def cancel_training_job(*, job: TrainingJob) -> TrainingJob:
    """Queued jobs cancel at once; a running one is stopped by its worker within a second."""
    if TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.QUEUED).update(
        status=TrainingJob.Status.CANCELLED, finished_at=timezone.now()
    ):
        job.refresh_from_db()
        return job
    if not TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING).update(
        status=TrainingJob.Status.CANCELLING
    ):
        raise TrainingJobError(f"job {job.pk} is {job.status}; only open jobs can be cancelled")
    job.refresh_from_db()
    return job


def run_training_job(*, job_id: int) -> TrainingJob | None:
    if not TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED).update(
        status=TrainingJob.Status.RUNNING, started_at=timezone.now()
    ):
        return None
    job = TrainingJob.objects.select_related("version").get(pk=job_id)
    data = local_path(job.version)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        return _finish(job, TrainingJob.Status.FAILED, error="version not on local disk")
    command = command_for(job, data)
    TrainingJob.objects.filter(pk=job_id).update(command=command)
    log_path = out / "log.txt"
    reader = MetricsReader(job, out / "metrics.jsonl")
    tail_size = -1

    def follow() -> None:
        nonlocal tail_size
        reader.read_new()
        tail_size = _update_tail(job, log_path, unless_size=tail_size)

    def cancelling() -> bool:
        status = TrainingJob.objects.values_list("status", flat=True).get(pk=job_id)
        return status == TrainingJob.Status.CANCELLING

    def watcher_error(exc: BaseException) -> None:
        _finish(job, TrainingJob.Status.FAILED, error=f"the watcher stopped: {exc!r}")

    try:
        process = run_watched(
            command,
            log_path=log_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            on_tick=follow,
            cancelling=cancelling,
            on_watcher_error=watcher_error,
            poll_s=POLL_S,
        )
    except CouldNotStart as exc:  # the program is missing or not executable
        return _finish(job, TrainingJob.Status.FAILED, error=f"could not start: {exc}")
    reader.read_new()
    _update_tail(job, log_path)
    job.returncode = process.returncode
    job.save(update_fields=["returncode"])
    if process.cancelled:
        return _finish(job, TrainingJob.Status.CANCELLED)
    if process.returncode == 0:
        return _finish(job, TrainingJob.Status.SUCCEEDED)
    job.refresh_from_db(fields=["log_tail"])
    reason = stated_error(job.log_tail)
    error = f"exit code {process.returncode}" + (f": {reason}" if reason else "")
    return _finish(job, TrainingJob.Status.FAILED, error=error)


def stated_error(log_tail: str) -> str:
    """The last ``error: ...`` line ``python -m training`` printed (its one-line reason for a
    bad config, data or a model that is not there), without the prefix; "" when none.

    >>> stated_error("loading\\nerror: cannot load Stage-1 CLIP 'x': no folder\\n")
    "cannot load Stage-1 CLIP 'x': no folder"
    """
    for line in reversed(log_tail.splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    return ""


def _finish(job: TrainingJob, status: str, error: str = "") -> TrainingJob:
    from webapp.exports.webhooks import send_event

    TrainingJob.objects.filter(pk=job.pk).update(
        status=status, error=error, finished_at=timezone.now()
    )
    job.refresh_from_db()
    send_event(
        "job.finished",
        {
            "job": job.pk,
            "kind": job.kind,
            "status": job.status,
            "version": job.version.name,
            "checkpoint": job.checkpoint_dir,
            "last_step": job.last_step,
        },
    )
    job_finished(TRAINING, job.pk)  # a study waiting on it advances (webapp.core.job_events)
    return job


def _update_tail(job: TrainingJob, log_path: Path, *, unless_size: int = -1) -> int:
    """Store the end of the log; nothing is read or written while its size is
    ``unless_size`` (the poll loop's last one). Returns the size seen (-1: unreadable)."""
    size, tail = read_log_tail(log_path, unless_size=unless_size)
    if tail is not None:
        TrainingJob.objects.filter(pk=job.pk).update(log_tail=tail)
    return size


def read_log_tail(log_path: Path, *, unless_size: int = -1) -> tuple[int, str | None]:
    """The log's size and its last ``LOG_TAIL_CHARS`` bytes as text; the text is ``None``
    when the size is still ``unless_size`` or the log cannot be read (size -1). Benchmark
    jobs follow their scorer's log with it too."""
    try:
        size = log_path.stat().st_size
        if size == unless_size:
            return size, None
        with log_path.open("rb") as handle:
            handle.seek(max(size - LOG_TAIL_CHARS, 0))
            return size, handle.read().decode("utf-8", errors="replace")
    except OSError:
        return -1, None


class MetricsReader:
    """Follows ``metrics.jsonl``: complete lines only, each stored once (line number unique)."""

    def __init__(self, job: TrainingJob, path: Path) -> None:
        self.job = job
        self.path = path
        self.offset = 0
        self.line = TrainingMetric.objects.filter(job=job).count()

    def read_new(self) -> int:
        if not self.path.is_file():
            return 0
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0
        self.offset += end + 1
        rows = []
        for raw in chunk[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                values = json.loads(raw)
                step = int(values.get("step", 0))
            except (ValueError, TypeError, AttributeError) as err:
                # A complete line that is not a metrics object: say so, keep following the file.
                log.warning("job %s: skipped metrics line %r: %s", self.job.pk, raw[:200], err)
                continue
            rows.append(TrainingMetric(job=self.job, line=self.line, step=step, values=values))
            self.line += 1
        TrainingMetric.objects.bulk_create(rows, ignore_conflicts=True)
        if rows:
            TrainingJob.objects.filter(pk=self.job.pk).update(last_step=rows[-1].step)
        return len(rows)


def charted_metric(key: str) -> bool:
    """Whether a metrics key is drawn on the job page: loss terms, and for RL the reward terms
    and the KL to the reference (GRPO's loss stays near 0 by construction, so the rewards are
    what shows learning).

    >>> [k for k in ("loss", "rtcl_loss", "lr", "reward", "reward_rm", "reward_std", "kl")
    ...  if charted_metric(k)]
    ['loss', 'rtcl_loss', 'reward', 'reward_rm', 'kl']
    """
    if key in ("loss", "reward", "kl") or key.endswith("_loss"):
        return True
    return key.startswith("reward_") and key != "reward_std"


def loss_series(job: TrainingJob, *, limit: int = 2000) -> dict[str, list[tuple[int, float]]]:
    """Each charted term per step (``charted_metric``), for the curves on the job page."""
    series: dict[str, list[tuple[int, float]]] = {}
    for step, values in job.metrics.order_by("line").values_list("step", "values")[:limit]:
        for key, value in values.items():
            if charted_metric(key) and isinstance(value, int | float):
                series.setdefault(key, []).append((step, float(value)))
    return series
