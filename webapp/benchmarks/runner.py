"""The body of a benchmark job: ``python -m training bench`` as a subprocess, then its results.

``run_benchmark_job`` claims a queued job (a conditional ``UPDATE``, so a job runs once), runs
the scorer with stdout and stderr into ``<out_dir>/log.txt``, and once a second stores the end
of the log and the progress its last ``done/total`` line says; a job set to ``cancelling``
has its process group stopped. When the scorer exits 0 its ``metrics.json`` goes into the job
and every prediction, joined with its probe, becomes a ``BenchmarkAnswer`` (see the models'
docstring for why a table); the job is ``done`` only once both are stored.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.probes.layout import Probe, ProbeSet, ProbeSetError
from training.probes.metrics import parse_all
from webapp.benchmarks.models import BenchmarkAnswer, BenchmarkJob
from webapp.core.job_events import BENCHMARK, job_finished
from webapp.core.subprocesses import CouldNotStart, run_watched
from webapp.exports.training_jobs import POLL_S, read_log_tail, stated_error

INSERT_BATCH = 2000
# "12/300" anywhere in a line: the scorer's progress lines ("[12/300] ..." or "12/300 probes").
PROGRESS = re.compile(r"(?<![\w/.])(\d+)\s*/\s*(\d+)(?![\w/.])")


def command_for(job: BenchmarkJob) -> list[str]:
    """``python -m training bench --model SPEC --probes DIR --out RUN [options]``."""
    command = [
        sys.executable, "-m", "training", "bench",
        "--model", job.model_spec,
        "--probes", job.probe_set.path,
        "--out", job.out_dir,
        "--batch-size", str(job.batch_size),
        "--concurrency", str(job.concurrency),
        # About a hundred progress lines per run, so the page moves in 1% steps.
        "--progress-every", str(max(1, job.progress_total // 100)),
    ]  # fmt: skip
    if job.max_new_tokens:
        command += ["--max-new-tokens", str(job.max_new_tokens)]
    if job.limit:
        command += ["--limit", str(job.limit)]
    return command


def progress_of(log_tail: str) -> tuple[int, int] | None:
    """``(done, total)`` from the last progress line of the log, if there is one.

    >>> progress_of("loading model\\n[8/40] probes scored\\n[16/40] probes scored\\n")
    (16, 40)
    >>> progress_of("scored 3 / 12 (12.5 probes/s)"), progress_of("error: no model")
    ((3, 12), None)
    >>> progress_of("see http://127.0.0.1:8000/v1 at 2026/12/03")
    """
    for line in reversed(log_tail.splitlines()):
        found = PROGRESS.findall(line)
        if found:
            done, total = found[-1]
            if int(total) > 0 and int(done) <= int(total):
                return int(done), int(total)
    return None


def run_benchmark_job(*, job_id: int) -> BenchmarkJob | None:
    Status = BenchmarkJob.Status
    if not BenchmarkJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=timezone.now()
    ):
        return None  # cancelled before it started, or already taken
    job = BenchmarkJob.objects.select_related("probe_set").get(pk=job_id)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command_for(job)
    BenchmarkJob.objects.filter(pk=job_id).update(command=command)
    log_path = out / "log.txt"
    size = -1

    def follow() -> None:
        nonlocal size
        size = _follow(job, log_path, unless_size=size)

    def cancelling() -> bool:
        return BenchmarkJob.objects.filter(pk=job_id, status=Status.CANCELLING).exists()

    def watcher_error(exc: BaseException) -> None:
        _finish(job, Status.FAILED, error=f"the watcher stopped: {exc!r}")

    try:
        process = run_watched(
            command,
            log_path=log_path,
            env=_environment(),
            on_tick=follow,
            cancelling=cancelling,
            on_watcher_error=watcher_error,
            poll_s=POLL_S,
        )
    except CouldNotStart as exc:
        return _finish(job, Status.FAILED, error=f"could not start the scorer: {exc}")
    _follow(job, log_path)
    BenchmarkJob.objects.filter(pk=job_id).update(returncode=process.returncode)
    if process.cancelled:
        return _finish(job, Status.CANCELLED)
    if process.returncode != 0:
        job.refresh_from_db(fields=["log_tail"])
        reason = stated_error(job.log_tail)
        error = f"exit code {process.returncode}" + (f": {reason}" if reason else "")
        return _finish(job, Status.FAILED, error=error)
    try:
        store_results(job)
    except (OSError, ValueError, KeyError, ProbeSetError) as exc:
        return _finish(job, Status.FAILED, error=f"could not read the scorer's output: {exc}")
    return _finish(job, Status.DONE)


def _environment() -> dict[str, str]:
    """The worker's environment, unbuffered, with the endpoint key the settings name (the
    scorer's endpoint client reads ``FGAM_LLM_API_KEY``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if settings.FGAM_LLM_API_KEY:
        env.setdefault("FGAM_LLM_API_KEY", settings.FGAM_LLM_API_KEY)
    return env


def _follow(job: BenchmarkJob, log_path: Path, *, unless_size: int = -1) -> int:
    """Store the log's end and the progress it shows; nothing while the log has not grown."""
    size, tail = read_log_tail(log_path, unless_size=unless_size)
    if tail is None:
        return size
    changes: dict[str, Any] = {"log_tail": tail}
    progress = progress_of(tail)
    if progress is not None:
        changes["progress_done"], changes["progress_total"] = progress
    BenchmarkJob.objects.filter(pk=job.pk).update(**changes)
    return size


def _finish(job: BenchmarkJob, status: str, error: str = "") -> BenchmarkJob:
    BenchmarkJob.objects.filter(pk=job.pk).update(
        status=status, error=error, finished_at=timezone.now()
    )
    job.refresh_from_db()
    job_finished(BENCHMARK, job.pk)  # a study waiting on it advances (webapp.core.job_events)
    return job


# --- Results -------------------------------------------------------------------------------


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    predictions: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as rows:
        for number, line in enumerate(rows, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                predictions[str(row["id"])] = row
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"predictions.jsonl line {number}: {err}") from err
    return predictions


def image_size(path: Path) -> tuple[int, int]:
    """Width and height from the image's header (the pixels are not decoded); (0, 0) when it
    cannot be read, and the page then shows the image without its boxes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return 0, 0


def answer_rows(job: BenchmarkJob, probes: ProbeSet) -> Iterator[BenchmarkAnswer]:
    """One row per prediction, in the probe set's order (predictions of probes the scorer
    skipped with ``--limit`` are simply absent)."""
    predictions = read_predictions(Path(job.out_dir) / "predictions.jsonl")
    files = image_files(probes.root)
    sizes: dict[str, tuple[int, int]] = {}
    for position, probe in enumerate(probes.probes()):
        prediction = predictions.get(probe.id)
        if prediction is None:
            continue
        if probe.image not in sizes:
            sizes[probe.image] = _size_of(probes, probe, files)
        width, height = sizes[probe.image]
        text = prediction.get("answer")
        readings = parse_all(text)
        yield BenchmarkAnswer(
            job=job,
            position=position,
            probe_id=probe.id,
            split=probe.split,
            object=probe.object,
            subject=probe.subject or "",
            relation=probe.relation or "",
            question=probe.question,
            expected=probe.answer,
            answer=text or "",
            parsed=prediction.get("parsed") or "",
            strict=readings["strict"] or "",
            pope=readings["pope"] or "",
            word=readings["word"] or "",
            latency_ms=prediction.get("latency_ms"),
            image_sha256=probe.image,
            image_uri=probe.uri or "",
            width=width,
            height=height,
            boxes=probe.boxes or [],
        )


def image_files(root: Path) -> dict[str, Path]:
    """sha256 -> file of every image in ``images/``, from one walk of the folder (looking
    each one up with ``ProbeSet.image_path`` lists its folder once per image)."""
    folder = root / "images"
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in folder.glob("*/*") if path.is_file()}


def _size_of(probes: ProbeSet, probe: Probe, files: dict[str, Path]) -> tuple[int, int]:
    if probe.uri is None and probe.image in files:
        return image_size(files[probe.image])
    try:
        return image_size(probes.image_path(probe))
    except ProbeSetError:
        return 0, 0


def store_results(job: BenchmarkJob) -> None:
    """``metrics.json`` into the job, the answers into their table, in one transaction (a
    redone store replaces the rows)."""
    out = Path(job.out_dir)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError("metrics.json is not a JSON object")
    probes = ProbeSet.open(job.probe_set.path)
    with transaction.atomic():
        BenchmarkAnswer.objects.filter(job=job).delete()
        batch: list[BenchmarkAnswer] = []
        count = 0
        for row in answer_rows(job, probes):
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                BenchmarkAnswer.objects.bulk_create(batch)
                count += len(batch)
                batch = []
        BenchmarkAnswer.objects.bulk_create(batch)
        count += len(batch)
        BenchmarkJob.objects.filter(pk=job.pk).update(
            metrics=metrics, progress_done=count, progress_total=count
        )
