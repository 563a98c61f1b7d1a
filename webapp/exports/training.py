"""Training jobs: ``python -m training ...`` on an exported version, metrics streamed back.

``start_training_job`` validates the config against ``training/``'s own dataclass (defaults,
types, unknown keys) and enqueues ``fgam.gpu.train``. ``run_training_job`` (the task body) runs
the trainer as a subprocess (``torchrun`` for several GPUs), reads each new line of the run's
``metrics.jsonl`` into ``TrainingMetric`` rows while it runs, keeps the end of the log, and
stops the process when the job is cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.stage1.config import ConfigError, Stage1Config, resolve, to_dict
from webapp.exports.models import DatasetVersion, TrainingJob, TrainingMetric
from webapp.exports.services import local_path

log = logging.getLogger(__name__)

# Kinds with an entry point in training/ today; the others are accepted by the model and the
# UI lists them, but starting one says clearly that training/ cannot run it yet.
RUNNABLE_KINDS = {TrainingJob.Kind.STAGE1: "stage1", TrainingJob.Kind.ABLATION: "stage1"}
POLL_S = 1.0
LOG_TAIL_CHARS = 8000


class TrainingJobError(ValueError):
    """A job that cannot be started or changed as asked; the message says why."""


def default_config(kind: str = TrainingJob.Kind.STAGE1) -> dict[str, Any]:
    """The editable defaults, from ``training/stage1/config.py``."""
    return to_dict(Stage1Config())


def config_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Stage1Config)}


def start_training_job(
    *,
    version: DatasetVersion,
    kind: str = TrainingJob.Kind.STAGE1,
    preset: str = "",
    config: dict[str, Any] | None = None,
    gpus: int = 1,
    created_by=None,
) -> TrainingJob:
    if kind not in TrainingJob.Kind.values:
        raise TrainingJobError(f"unknown kind {kind!r}; one of {', '.join(TrainingJob.Kind)}")
    if kind not in RUNNABLE_KINDS:
        raise TrainingJobError(
            f"{TrainingJob.Kind(kind).label} jobs need a training/ entry point that does not "
            "exist yet; Stage-1 and its ablations can run"
        )
    if not version.is_ready:
        raise TrainingJobError(f"version {version.name} is {version.status}, not ready")
    if local_path(version) is None:
        raise TrainingJobError(f"version {version.name} is not on a local filesystem")
    if not 1 <= int(gpus) <= 64:
        raise TrainingJobError("gpus must be between 1 and 64")
    overrides = {k: v for k, v in (config or {}).items() if v is not None}
    if kind == TrainingJob.Kind.ABLATION and not preset:
        raise TrainingJobError("an ablation names a preset (itcl_only, rtcl_only, ...)")
    if preset:
        overrides["preset"] = preset
    try:
        resolved = resolve({}, overrides)
    except ConfigError as err:
        raise TrainingJobError(str(err)) from err
    with transaction.atomic():
        job = TrainingJob.objects.create(
            version=version,
            kind=kind,
            preset=resolved.preset,
            config=_changed(to_dict(resolved)),
            gpus=int(gpus),
            created_by=created_by,
        )
        job.out_dir = str(Path(settings.FGAM_TRAINING_DIR) / f"job-{job.pk:06d}")
        job.save(update_fields=["out_dir"])
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from workers.tasks.exports import train

    result = train.delay(job_id)
    TrainingJob.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def _changed(resolved: dict[str, Any]) -> dict[str, Any]:
    """Only the values that differ from the defaults (the command line stays short)."""
    defaults = default_config()
    return {k: v for k, v in resolved.items() if defaults.get(k) != v}


def command_for(job: TrainingJob, data: Path) -> list[str]:
    entry = RUNNABLE_KINDS[TrainingJob.Kind(job.kind)]
    args = [entry, "--data", str(data), "--out", job.out_dir]
    args += [f"{k}={v}" for k, v in sorted(job.config.items())]
    if job.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                str(job.gpus), "-m", "training", *args]  # fmt: skip
    return [sys.executable, "-m", "training", *args]


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
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=settings.BASE_DIR,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:  # the program is missing or not executable
            return _finish(job, TrainingJob.Status.FAILED, error=f"could not start: {exc}")
        reader = MetricsReader(job, out / "metrics.jsonl")
        cancelled = False
        tail_size = -1
        try:
            while process.poll() is None:
                time.sleep(POLL_S)
                reader.read_new()
                tail_size = _update_tail(job, log_path, unless_size=tail_size)
                status = TrainingJob.objects.values_list("status", flat=True).get(pk=job_id)
                if status == TrainingJob.Status.CANCELLING and not cancelled:
                    cancelled = True
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
            reader.read_new()
        except BaseException as exc:
            # The watcher broke (the database went away, the task hit its time limit): stop the
            # training it can no longer follow and say so, rather than leave a job "running".
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            _finish(job, TrainingJob.Status.FAILED, error=f"the watcher stopped: {exc!r}")
            raise
    _update_tail(job, log_path)
    job.returncode = process.returncode
    job.save(update_fields=["returncode"])
    if cancelled:
        return _finish(job, TrainingJob.Status.CANCELLED)
    if process.returncode == 0:
        return _finish(job, TrainingJob.Status.SUCCEEDED)
    return _finish(job, TrainingJob.Status.FAILED, error=f"exit code {process.returncode}")


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
    return job


def _update_tail(job: TrainingJob, log_path: Path, *, unless_size: int = -1) -> int:
    """Store the end of the log; nothing is read or written while its size is
    ``unless_size`` (the poll loop's last one). Returns the size seen (-1: unreadable)."""
    try:
        size = log_path.stat().st_size
        if size == unless_size:
            return size
        with log_path.open("rb") as handle:
            handle.seek(max(size - LOG_TAIL_CHARS, 0))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return -1
    TrainingJob.objects.filter(pk=job.pk).update(log_tail=tail)
    return size


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


def loss_series(job: TrainingJob, *, limit: int = 2000) -> dict[str, list[tuple[int, float]]]:
    """Each loss term per step (``*loss`` keys and ``lr``), for the curves on the job page."""
    series: dict[str, list[tuple[int, float]]] = {}
    for step, values in job.metrics.order_by("line").values_list("step", "values")[:limit]:
        for key, value in values.items():
            if (key == "loss" or key.endswith("_loss")) and isinstance(value, int | float):
                series.setdefault(key, []).append((step, float(value)))
    return series
