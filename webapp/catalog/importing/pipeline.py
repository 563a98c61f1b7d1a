"""The steps every importer shares, from a parsed ``Plan`` to rows in the database.

1. check the arguments (dataset name, images folder) and parse the files;
2. read and check every image file, and fit every box to its image;
3. with ``on_error="abort"`` and any error: raise ``ImportFailed`` having written nothing;
4. store the image bytes (content-addressed, each file once);
5. in one transaction: the dataset, a ``Run``, images, regions, questions, and the
   thumbnail tasks, which are queued only once that transaction commits.

An aborted import records nothing at all, not even a failed ``Run``: validation failures are
answered to the caller (the command prints them, the API returns them), and "the database is
as it was" stays literally true. A failure inside the transaction (the database went away)
rolls everything back and propagates. Bytes stored in step 4 before such a failure stay in
storage; they are content-addressed, so a rerun reuses them and nothing points at them wrongly.

Rerunning an import creates no duplicates: images are unique per (dataset, sha256), regions
and questions carry a ``source_key`` unique per image, and inserts skip what exists. An
existing image keeps its fields, and gains the captions it did not have yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_unicode_slug
from django.db import connection, transaction
from django.utils import timezone

from training.geometry import BoxError, fit_box
from webapp.catalog.importing.images import LoadedImage, inspect_all, store_all
from webapp.catalog.importing.plan import Plan
from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.core.importing.bulk import insert_rows
from webapp.core.importing.fields import FileProblem
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import (
    ON_ERROR,
    RUN_ERROR_LIMIT,
    ImportFailed,
    ImportReport,
    RecordError,
)
from webapp.jobs.models import Run
from webapp.regions.models import Region

IMAGE_COLUMNS = (
    "sha256",
    "width",
    "height",
    "format",
    "storage_path",
    "uri",
    "file_name",
    "captions",
    "source",
    "source_id",
    "split",
    "metadata",
)
REGION_COLUMNS = (
    "image_id",
    "image_width",
    "image_height",
    "x0",
    "y0",
    "x1",
    "y1",
    "phrase",
    "caption",
    "flagged",
    "flag_reason",
    "source_key",
)
QUESTION_COLUMNS = ("image_id", "question", "reference", "source", "source_key")

# A fitted region: the image key, then REGION_COLUMNS without the image's id and size.
Fitted = tuple[str, float, float, float, float, str, str, bool, str, str]


def run_import(
    *,
    format: str,
    dataset: str,
    images: Path,
    on_error: str,
    user: Any,
    progress: Progress | None,
    parameters: dict[str, Any],
    parse: Callable[[], Plan],
) -> ImportReport:
    """Parse with ``parse`` and import the result; see the module docstring for the steps."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    started, started_at = time.perf_counter(), timezone.now()
    report = ImportReport(format=format, dataset=dataset, on_error=on_error)
    images = Path(images)
    _check_arguments(report, dataset, images)

    lap = time.perf_counter()
    try:
        plan = parse()
    except FileProblem as exc:
        report.errors.append(exc.error)
        _fail(report, started)
    report.errors.extend(plan.errors)
    report.notes.update(plan.notes)
    report.timings["parse_s"] = _since(lap)

    lap = time.perf_counter()
    loaded, image_errors = inspect_all(
        plan.images.values(),
        images,
        max_pixels=settings.FGAM_MAX_IMAGE_PIXELS,
        progress=progress,
    )
    report.errors.extend(image_errors)
    fitted = _fit_regions(plan, loaded, report)
    questions = [q for q in plan.questions if q.image_key in loaded]
    # Each error is one bad record; records whose image is bad are skipped along with it.
    report.skipped_records = (
        len(report.errors)
        + sum(1 for r in plan.regions if r.image_key not in loaded)
        + len(plan.questions)
        - len(questions)
    )
    report.timings["check_s"] = _since(lap)
    if report.errors and on_error == "abort":
        report.skipped_records = 0
        _fail(report, started)

    lap = time.perf_counter()
    store_all(loaded.values(), progress=progress)
    report.timings["store_s"] = _since(lap)

    lap = time.perf_counter()
    with transaction.atomic():
        run = _write(plan, loaded, fitted, questions, report, dataset, user, parameters)
        report.timings["write_s"] = _since(lap)
        report.duration_s = _since(started)
        _finish_run(run, report, started_at)
    # The report's figures include the commit (deferred foreign-key checks run there); the
    # Run row, saved inside the transaction, has them without it.
    report.timings["write_s"] = _since(lap)
    report.duration_s = _since(started)
    return report


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _fail(report: ImportReport, started: float) -> None:
    report.duration_s = _since(started)
    raise ImportFailed(report)


def _check_arguments(report: ImportReport, dataset: str, images: Path) -> None:
    try:
        validate_unicode_slug(dataset)
        if len(dataset) > Dataset._meta.get_field("name").max_length:
            raise ValidationError("is longer than 100 characters")
    except ValidationError as exc:
        reason = f"{dataset!r} is not a valid dataset name: {' '.join(exc.messages)}"
        report.errors.append(RecordError("", "", "dataset", reason))
    if not images.is_dir():
        report.errors.append(RecordError("", "", "images", f"{images} is not a folder"))
    if report.errors:
        raise ImportFailed(report)


def _fit_regions(plan: Plan, loaded: dict[str, LoadedImage], report: ImportReport) -> list:
    """Check each box against its image's real size; clip what overlaps, refuse the rest.

    ``FGAM_BOX_CLIP_TOLERANCE`` (None by default: clip any spill) is the one rule for every
    importer that fits boxes.
    """
    tolerance = settings.FGAM_BOX_CLIP_TOLERANCE
    fitted: list[Fitted] = []
    for spec in plan.regions:
        image = loaded.get(spec.image_key)
        if image is None:
            continue  # the image is bad and has its own error
        x0, y0, x1, y1 = spec.box
        width, height = image.info.width, image.info.height
        # Most boxes lie inside their image (NaN fails every comparison, so it goes on to
        # fit_box); only the others pay for fit_box's full checks and clipping.
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            try:
                fit = fit_box(spec.box, width, height, tolerance)
            except BoxError as exc:
                report.errors.append(RecordError(spec.file, spec.where, spec.box_field, str(exc)))
                continue
            report.clipped_boxes += fit.clipped
            x0, y0, x1, y1 = fit.box
        report.crowd_flagged += spec.flag_reason == "crowd"
        flagged = bool(spec.flag_reason)
        fitted.append(
            (
                spec.image_key,
                x0,
                y0,
                x1,
                y1,
                spec.phrase,
                spec.caption,
                flagged,
                spec.flag_reason,
                spec.source_key,
            )
        )
    return fitted


def _write(plan, loaded, fitted, questions, report, dataset, user, parameters) -> Run:
    now = timezone.now()
    dataset_row, _ = Dataset.objects.get_or_create(name=dataset, defaults={"created_by": user})
    run = Run.objects.create(
        kind=Run.Kind.IMPORT,
        dataset=dataset_row,
        parameters={"format": plan.format, "on_error": report.on_error, **parameters},
        status=Run.Status.RUNNING,
        created_by=user,
    )
    image_ids, new_ids = _write_images(plan, loaded, dataset_row, run, now, report)

    if fitted:
        _insert_regions(fitted, loaded, image_ids, set(new_ids), run, now)
        report.regions_new = Region.objects.filter(run=run).count()
        report.regions_existing = len(fitted) - report.regions_new
    if questions:
        _insert_questions(questions, image_ids, run, now)
        report.questions_new = QuestionItem.objects.filter(run=run).count()
        report.questions_existing = len(questions) - report.questions_new

    if new_ids:
        from webapp.catalog.services import enqueue_thumbnails

        enqueue_thumbnails(new_ids)
    return run


def _insert_regions(fitted, loaded, image_ids, new_ids: set[int], run, now) -> None:
    """Regions of images created by this import cannot exist yet: they take the direct COPY."""
    constants = {
        "origin": Region.Origin.GT.value,
        "status": Region.Status.PENDING.value,
        "version": 1,
        "run_id": run.pk,
        "created_at": now,
        "updated_at": now,
    }
    rows = [
        (image_ids[key], loaded[key].info.width, loaded[key].info.height, *rest)
        for key, *rest in fitted
    ]
    fresh = [row for row in rows if row[0] in new_ids]
    if fresh:
        insert_rows(Region, REGION_COLUMNS, fresh, constants, fresh=True)
    if len(fresh) < len(rows):
        old = [row for row in rows if row[0] not in new_ids]
        insert_rows(Region, REGION_COLUMNS, old, constants)


def _insert_questions(questions, image_ids, run, now) -> None:
    insert_rows(
        QuestionItem,
        QUESTION_COLUMNS,
        (
            (image_ids[q.image_key], q.question, q.reference, q.source, q.source_key)
            for q in questions
        ),
        {"run_id": run.pk, "created_at": now},
    )


def _write_images(
    plan: Plan,
    loaded: dict[str, LoadedImage],
    dataset: Dataset,
    run: Run,
    now: datetime,
    report: ImportReport,
) -> tuple[dict[str, int], list[int]]:
    """Insert the images that are new, merge captions into the others; ids by spec key."""
    by_sha: dict[str, tuple] = {}
    captions: dict[str, list[str]] = {}
    for key, image in loaded.items():
        spec, info = plan.images[key], image.info
        # Files with the same bytes are one image; the row shares this list, so it ends up
        # with the captions of all of them.
        merged = captions.setdefault(info.sha256, [])
        merged.extend(c for c in spec.captions if c not in merged)
        if info.sha256 not in by_sha:
            by_sha[info.sha256] = (
                info.sha256,
                info.width,
                info.height,
                info.format,
                info.storage_path,
                spec.uri,
                spec.file_name,
                merged,
                spec.source,
                spec.source_id,
                spec.split,
                spec.metadata,
            )
    insert_rows(
        Image,
        IMAGE_COLUMNS,
        by_sha.values(),
        {"dataset_id": dataset.pk, "run_id": run.pk, "thumbnail_path": "", "created_at": now},
    )

    ids: dict[str, int] = {}
    new_ids: list[int] = []
    updated: list[Image] = []
    shas = list(by_sha)
    step = 900 if connection.vendor == "sqlite" else settings.FGAM_IMPORT_BATCH_SIZE
    for start in range(0, len(shas), step):
        rows = Image.objects.filter(dataset=dataset, sha256__in=shas[start : start + step])
        for image in rows.only("id", "sha256", "run_id", "captions"):
            ids[image.sha256] = image.pk
            if image.run_id == run.pk:
                new_ids.append(image.pk)
                continue
            have = image.captions if isinstance(image.captions, list) else []
            extra = [c for c in captions[image.sha256] if c not in have]
            if extra:
                image.captions = have + extra
                updated.append(image)
    Image.objects.bulk_update(updated, ["captions"], batch_size=500)
    report.images_new = len(new_ids)
    report.images_existing = len(ids) - len(new_ids)
    return {key: ids[image.info.sha256] for key, image in loaded.items()}, new_ids


def _finish_run(run: Run, report: ImportReport, started_at: datetime) -> None:
    report.run_id = run.pk
    run.status = Run.Status.SUCCEEDED
    run.started_at = started_at
    run.finished_at = timezone.now()
    counts = report.counts()
    run.done = sum(counts[k] for k in counts if k.endswith(("_new", "_existing")))
    run.failed = report.skipped_records
    run.total = run.done + run.failed
    run.summary = {**counts, **report.timings, "duration_s": report.duration_s}
    run.errors = [str(error) for error in report.errors[:RUN_ERROR_LIMIT]]
    run.save()
