"""Import correction trajectories from JSONL in the FORMATS.md SFT shape.

One line per correction step::

    {"id": ..., "trajectory": "t1", "step": 0, "image": "<sha256>", "question": Q,
     "response": A_0, "feedback": F_0, "target": A*_1, "error_types": ["spatial"]}

Lines are grouped by ``trajectory`` and ordered by ``step``, which must run 0..n-1. Step k
gives A_k (``response``), F_k (``feedback``) and A_k's error types. The last line's ``target``,
when it differs from its response, becomes one more answer A_n (written by the import, with no
feedback). The final answer is an optional ``final_answer`` key, else the last ``target``.
Optional keys: ``status`` (else the ``status`` argument), ``seeded_error``.

``image`` names an image already in the dataset by its sha256, or else by its file name or
URI as the catalog stored them (``file_name`` / ``uri`` of the image).

Everything is validated before anything is written; errors name the line and the field. With
``on_error="abort"`` any error writes nothing (``ImportFailed``); with ``"skip"`` a trajectory
with a bad line is left out whole. Re-importing the same file creates no duplicates: each
trajectory's ``source_key`` is ``import:<trajectory id>``, unique per image.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from training.formats import ERROR_TYPES
from webapp.catalog.models import Dataset, Image
from webapp.core.importing.bulk import insert_rows
from webapp.core.importing.fields import FileProblem, get_id, get_text, read_text, type_name
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import (
    ON_ERROR,
    BadField,
    ImportFailed,
    ImportReport,
    RecordError,
)
from webapp.jobs.models import Run
from webapp.trajectories.models import (
    Trajectory,
    TrajectoryChange,
    TrajectoryStep,
)
from webapp.trajectories.services import document

FORMAT = "trajectories"
IMPORT_AUTHOR = "import"
SHA256 = re.compile(r"[0-9a-f]{64}")
LOOKUP_CHUNK = 1000
WRITE_CHUNK = 500


@dataclass
class _Line:
    number: int
    step: int
    response: str
    feedback: str
    target: str
    error_types: list[str]


@dataclass
class _Parsed:
    """One trajectory as its lines describe it, with the first line that named each fact."""

    key: str
    image: str
    question: str
    first_line: int
    lines: list[_Line] = field(default_factory=list)
    final_answer: str | None = None
    status: str | None = None
    seeded_error: str = ""
    errors: list[RecordError] = field(default_factory=list)
    image_id: int | None = None


def _error_types(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadField("error_types", f"expected a list of names, got {type_name(value)}")
    unknown = sorted(set(value) - set(ERROR_TYPES))
    if unknown:
        raise BadField(
            "error_types",
            f"unknown error type {', '.join(map(repr, unknown))}; "
            f"expected any of {', '.join(ERROR_TYPES)}",
        )
    return [name for name in ERROR_TYPES if name in value]


def _step(record: dict) -> int:
    value = record.get("step")
    if "step" not in record:
        raise BadField("step", "missing")
    if type(value) is not int or value < 0:
        raise BadField("step", f"expected a step number 0, 1, 2, ..., got {value!r}")
    return value


def _choice(record: dict, key: str, allowed: tuple[str, ...]) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if value not in allowed:
        raise BadField(key, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def parse_lines(path: Path, default_status: str) -> tuple[dict[str, _Parsed], list[RecordError]]:
    """Read every line; group them by trajectory. Errors of a trajectory stay with it."""
    file = str(path)
    text = read_text(path)
    by_key: dict[str, _Parsed] = {}
    loose: list[RecordError] = []  # lines that name no trajectory
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            loose.append(
                RecordError(file, where, "", f"invalid JSON at column {exc.colno}: {exc.msg}")
            )
            continue
        if not isinstance(record, dict):
            loose.append(
                RecordError(file, where, "", f"expected an object, got {type_name(record)}")
            )
            continue
        try:
            key = str(get_id(record, "trajectory"))
        except BadField as exc:
            loose.append(RecordError(file, where, exc.field, exc.reason))
            continue
        parsed = by_key.get(key)
        try:
            image = get_text(record, "image", max_length=2048).strip()
            if not image:
                raise BadField("image", "is empty")
            question = get_text(record, "question").strip()
            if not question:
                raise BadField("question", "is empty")
            line = _Line(
                number=number,
                step=_step(record),
                response=get_text(record, "response").strip(),
                feedback=get_text(record, "feedback", optional=True).strip(),
                target=get_text(record, "target", optional=True).strip(),
                error_types=_error_types(record.get("error_types")),
            )
            if not line.response:
                raise BadField("response", "is empty")
            final = get_text(record, "final_answer", optional=True).strip() or None
            status = _choice(record, "status", tuple(Trajectory.Status.values))
            seeded = _choice(record, "seeded_error", ERROR_TYPES) or ""
        except BadField as exc:
            parsed = parsed or by_key.setdefault(key, _Parsed(key, "", "", number))
            parsed.errors.append(RecordError(file, where, exc.field, exc.reason))
            continue
        if parsed is None:
            parsed = by_key[key] = _Parsed(key, image, question, number, status=default_status)
        elif not parsed.image:  # an earlier line of it was bad before these were read
            parsed.image, parsed.question = image, question
        for name, value, first in (("image", image, parsed.image),
                                   ("question", question, parsed.question)):  # fmt: skip
            if value != first:
                reason = f"differs from line {parsed.first_line} of trajectory {key!r}"
                parsed.errors.append(RecordError(file, where, name, reason))
        earlier = next((other for other in parsed.lines if other.step == line.step), None)
        if earlier is not None:
            reason = f"step {line.step} of trajectory {key!r} is already on line {earlier.number}"
            parsed.errors.append(RecordError(file, where, "step", reason))
            continue
        parsed.lines.append(line)
        parsed.final_answer = final or parsed.final_answer
        parsed.status = status or parsed.status
        parsed.seeded_error = seeded or parsed.seeded_error
    for parsed in by_key.values():
        _check_whole(parsed, file)
    return by_key, loose


def _check_whole(parsed: _Parsed, file: str) -> None:
    """Steps 0..n-1 without gaps; approval needs a final answer."""
    parsed.lines.sort(key=lambda line: line.step)
    steps = [line.step for line in parsed.lines]
    where = f"line {parsed.first_line} (trajectory {parsed.key!r})"
    if parsed.lines and steps != list(range(len(steps))):
        missing = sorted(set(range(max(steps) + 1)) - set(steps))
        reason = f"steps must run 0..n-1; missing {', '.join(map(str, missing))}"
        parsed.errors.append(RecordError(file, where, "step", reason))
    if parsed.status == Trajectory.Status.APPROVED and not _final_answer(parsed):
        reason = "an approved trajectory needs a final answer (final_answer, or a last target)"
        parsed.errors.append(RecordError(file, where, "status", reason))


def _final_answer(parsed: _Parsed) -> str:
    if parsed.final_answer:
        return parsed.final_answer
    return parsed.lines[-1].target if parsed.lines else ""


def _resolve_images(dataset: Dataset, parsed: list[_Parsed], file: str) -> None:
    """Each trajectory's image id, by sha256, else by file name or URI; an error if none."""
    refs = sorted({p.image for p in parsed if p.image})
    found: dict[str, int] = {}
    images = Image.objects.filter(dataset=dataset)
    for start in range(0, len(refs), LOOKUP_CHUNK):
        chunk = refs[start : start + LOOKUP_CHUNK]
        hashes = [r for r in chunk if SHA256.fullmatch(r)]
        names = [r for r in chunk if not SHA256.fullmatch(r)]
        found.update(images.filter(sha256__in=hashes).values_list("sha256", "pk"))
        if names:
            by_name = images.filter(file_name__in=names).values_list("pk", "file_name")
            for pk, name in by_name:
                found.setdefault(name, pk)
            found.update(
                (uri, pk) for pk, uri in images.filter(uri__in=names).values_list("pk", "uri")
            )
    for p in parsed:
        p.image_id = found.get(p.image)
        if p.image and p.image_id is None:
            reason = (
                f"no image {p.image!r} in dataset {dataset.name!r} "
                "(looked up by sha256, file name and uri)"
            )
            p.errors.append(RecordError(file, f"line {p.first_line}", "image", reason))


def _steps_of(parsed: _Parsed) -> list[dict]:
    steps = [
        {"response": line.response, "feedback": line.feedback, "error_types": line.error_types}
        for line in parsed.lines
    ]
    last = parsed.lines[-1]
    if last.target and last.target != last.response:
        steps.append({"response": last.target, "feedback": "", "error_types": []})
    return steps


def import_trajectories(
    *,
    dataset: str,
    file: Path,
    on_error: str = "abort",
    status: str = Trajectory.Status.IN_REVIEW,
    user: Any = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the trajectories of ``file`` into ``dataset`` (which must hold their images)."""
    started = time.monotonic()
    path = Path(file)
    report = ImportReport(format=FORMAT, dataset=dataset, on_error=on_error)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}")
    if status not in Trajectory.Status.values:
        raise ValueError(f"status must be one of {', '.join(Trajectory.Status.values)}")
    dataset_row = Dataset.objects.filter(name=dataset).first()
    if dataset_row is None:
        report.errors.append(RecordError(str(path), "", "dataset", f"no dataset named {dataset!r}"))
        raise ImportFailed(report)
    try:
        by_key, loose = parse_lines(path, status)
    except FileProblem as problem:
        report.errors.append(problem.error)
        raise ImportFailed(report) from None
    parsed = list(by_key.values())
    if progress:
        progress("check", len(parsed), len(parsed))
    _resolve_images(dataset_row, parsed, str(path))
    report.errors.extend(loose)
    good = []
    for p in parsed:
        if p.errors:
            report.errors.extend(p.errors)
            report.skipped_records += 1
        else:
            good.append(p)
    report.errors.sort(key=lambda e: int(e.record.split()[1]) if e.record else 0)
    if report.errors and on_error == "abort":
        raise ImportFailed(report)
    report.run_id = _write(dataset_row, good, path, report, user, progress)
    report.duration_s = time.monotonic() - started
    return report


def _write(dataset: Dataset, good: list[_Parsed], path: Path, report: ImportReport, user,
           progress: Progress | None) -> int:  # fmt: skip
    """Insert the trajectories not imported before, with steps and history, in one transaction."""
    existing: set[tuple[int, str]] = set()
    keys = [(p.image_id, f"import:{p.key}") for p in good]
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        existing.update(
            Trajectory.objects.filter(
                image_id__in={i for i, _ in chunk}, source_key__in={k for _, k in chunk}
            ).values_list("image_id", "source_key")
        )
    fresh = [p for p in good if (p.image_id, f"import:{p.key}") not in existing]
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            kind=Run.Kind.IMPORT, dataset=dataset, created_by=user, status=Run.Status.SUCCEEDED,
            parameters={"format": FORMAT, "file": str(path), "on_error": report.on_error},
            total=len(good), done=len(fresh), started_at=now, finished_at=now,
        )  # fmt: skip
        steps_new = 0
        for start in range(0, len(fresh), WRITE_CHUNK):
            chunk = fresh[start : start + WRITE_CHUNK]
            steps_new += _write_chunk(dataset, chunk, run, user)
            if progress:
                progress("write", start + len(chunk), len(fresh))
        report.notes = {
            "trajectories new": len(fresh),
            "trajectories already there": len(good) - len(fresh),
            "steps new": steps_new,
        }
        run.summary = report.counts()
        run.errors = [str(e) for e in report.errors[:1000]]
        run.save(update_fields=["summary", "errors"])
    return run.pk


STEP_COLUMNS = ("trajectory_id", "k", "response", "feedback", "response_by", "feedback_by",
                "error_types")  # fmt: skip
CHANGE_COLUMNS = ("trajectory_id", "version", "after")


def _write_chunk(dataset: Dataset, chunk: list[_Parsed], run: Run, user) -> int:
    """Trajectories (a bulk insert that gives back their ids), then their steps and creation
    rows, which cannot clash with anything, by ``COPY`` (``bulk_create`` on SQLite)."""
    rows = Trajectory.objects.bulk_create(
        [
            Trajectory(
                dataset=dataset,
                image_id=p.image_id,
                question=p.question,
                final_answer=_final_answer(p),
                status=p.status,
                seeded_error=p.seeded_error,
                source_key=f"import:{p.key}",
                run=run,
                updated_by=user,
            )
            for p in chunk
        ]
    )
    step_rows, change_rows = [], []
    for row, parsed in zip(rows, chunk, strict=True):
        steps = [
            {
                "k": k,
                "response": step["response"],
                "feedback": step["feedback"],
                "response_by": IMPORT_AUTHOR,
                "feedback_by": IMPORT_AUTHOR if step["feedback"] else "",
                "error_types": step["error_types"],
            }
            for k, step in enumerate(_steps_of(parsed))
        ]
        step_rows.extend((row.pk, *(step[c] for c in STEP_COLUMNS[1:])) for step in steps)
        change_rows.append((row.pk, row.version, document(row, steps)))
    insert_rows(TrajectoryStep, STEP_COLUMNS, step_rows, {}, fresh=True)
    constants = {
        "action": TrajectoryChange.Action.CREATE.value,
        "user_id": getattr(user, "pk", None),
        "run_id": run.pk,
        "at": timezone.now(),
    }
    insert_rows(TrajectoryChange, CHANGE_COLUMNS, change_rows, constants, fresh=True)
    return len(step_rows)
