"""Cutting dataset versions: validate the choice, then stream the rows into the FORMATS.md layout.

How a version is made:

1. ``cut_version`` validates datasets and filters (a bad filter or an empty selection is an
   ``ExportError`` naming the field), records the ``DatasetVersion`` (status ``queued``) with
   its lineage, and enqueues ``fgam.default.export_version`` once the transaction commits.
2. ``export_version`` claims the version with a conditional update, then reads every row
   inside one REPEATABLE READ transaction (one snapshot: a review landing meanwhile is either
   wholly in or wholly out) through server-side cursors (``.iterator(chunk_size=...)`` is a
   named cursor on PostgreSQL; the regions, the bulk of a version, come through
   ``rows.chunked_rows``), and writes through ``training.data.writer`` into a temporary
   folder whose name starts with a dot.
3. The folder is published: renamed into place in one ``rename`` on a local filesystem, or
   uploaded through Django's storage API with ``manifest.json`` last. Only then does the row
   become ``ready``. A version killed midway leaves a hidden temporary folder and a row that
   is not ready; running the task again starts over and completes it.

Ordering is by image sha256, then image id, then region id; the sample key is the image's
sha256, so keys, order and the held-out split do not depend on when or where a cut is made.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.fields.json import KT
from django.utils import timezone

from training.data.layout import content_sha256, key_in_holdout
from training.data.writer import REGION_ROW, VersionWriter, folder_size
from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.exports.models import DatasetVersion
from webapp.exports.progress import ExportProgress, ProgressCallback
from webapp.exports.rows import chunked_rows
from webapp.regions.models import Region

log = logging.getLogger(__name__)

STATUS_CHOICES = ("accepted", "any")
ORIGINS = tuple(Region.Origin.values)
FILTER_KEYS = {
    "status",
    "origins",
    "min_score",
    "exclude_flagged",
    "approved_trajectories_only",
    "holdout_fraction",
}


class ExportError(ValueError):
    """A version that cannot be cut as asked; the message names the field or row at fault."""


@dataclass(frozen=True)
class Filters:
    status: str = "accepted"
    origins: list[str] = field(default_factory=list)  # empty: every origin
    min_score: float | None = None
    exclude_flagged: bool = True
    # True: approved trajectories only; False: every trajectory but the rejected ones.
    approved_trajectories_only: bool = True
    holdout_fraction: float = 0.0

    def region_q(self) -> Q:
        q = Q()
        if self.status == "accepted":
            q &= Q(status=Region.Status.ACCEPTED)
        if self.origins:
            q &= Q(origin__in=self.origins)
        if self.min_score is not None:
            q &= Q(score__gte=self.min_score)
        if self.exclude_flagged:
            q &= Q(flagged=False)
        return q


def parse_filters(raw: dict[str, Any] | None) -> Filters:
    """Strict: unknown keys and bad values raise ``ExportError`` naming the key."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - FILTER_KEYS)
    if unknown:
        raise ExportError(
            f"unknown filter {', '.join(unknown)}; known: {', '.join(sorted(FILTER_KEYS))}"
        )
    status = raw.get("status", "accepted")
    if status not in STATUS_CHOICES:
        raise ExportError(f"filter status={status!r}: one of {', '.join(STATUS_CHOICES)}")
    origins = raw.get("origins") or []
    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    bad = [o for o in origins if o not in ORIGINS]
    if bad:
        raise ExportError(f"filter origins: {', '.join(map(repr, bad))} not in {ORIGINS}")
    min_score = raw.get("min_score")
    if min_score is not None:
        try:
            min_score = float(min_score)
        except (TypeError, ValueError) as err:
            raise ExportError(f"filter min_score={min_score!r} is not a number") from err
        if not 0.0 <= min_score <= 1.0:
            raise ExportError(f"filter min_score={min_score} must be between 0 and 1")
    fraction = raw.get("holdout_fraction", 0.0)
    try:
        fraction = float(fraction)
    except (TypeError, ValueError) as err:
        raise ExportError(f"filter holdout_fraction={fraction!r} is not a number") from err
    if not 0.0 <= fraction < 1.0:
        raise ExportError(f"filter holdout_fraction={fraction} must be in [0, 1)")
    flags = {}
    for key in ("exclude_flagged", "approved_trajectories_only"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise ExportError(f"filter {key}={value!r} must be true or false")
        flags[key] = value
    return Filters(
        status=status,
        origins=sorted(set(origins)),
        min_score=min_score,
        holdout_fraction=fraction,
        **flags,
    )


def _datasets(names: list[str]) -> list[Dataset]:
    if not names:
        raise ExportError("choose at least one dataset")
    found = {d.name: d for d in Dataset.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ExportError(f"no dataset named {', '.join(map(repr, missing))}")
    return sorted(found.values(), key=lambda d: d.name)


def region_queryset(dataset_ids: list[int], filters: Filters):
    return Region.objects.filter(Q(image__dataset_id__in=dataset_ids) & filters.region_q())


def question_queryset(dataset_ids: list[int]):
    return QuestionItem.objects.filter(image__dataset_id__in=dataset_ids)


def cut_version(
    *,
    datasets: list[str],
    filters: dict[str, Any] | None = None,
    reference: bool = False,
    created_by=None,
    out_dir: str | Path | None = None,
    train_on_ready: dict[str, Any] | None = None,
    enqueue: bool = True,
) -> DatasetVersion:
    """Record a version to cut and (unless ``enqueue=False``) hand it to the export task.

    ``out_dir`` writes into that folder instead of Django's storage (the command line).
    """
    chosen = _datasets(list(datasets))
    parsed = parse_filters(filters)
    ids = [d.pk for d in chosen]
    if (
        not region_queryset(ids, parsed).exists()
        and not question_queryset(ids).exists()
        and not trajectory_queryset(ids, parsed).exists()
    ):
        raise ExportError(
            f"empty selection: no region of {', '.join(d.name for d in chosen)} passes the "
            f"filters ({describe_filters(parsed)}) and there are no questions or trajectories"
        )
    with transaction.atomic():
        version = DatasetVersion.objects.create(
            name=f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
            filters=asdict(parsed),
            reference=reference,
            holdout_fraction=parsed.holdout_fraction,
            storage=DatasetVersion.Storage.PATH if out_dir else DatasetVersion.Storage.STORAGE,
            location=str(Path(out_dir).resolve()) if out_dir else "",
            train_on_ready=train_on_ready or {},
            created_by=created_by,
        )
        version.datasets.set(chosen)
        parents = previous_versions(ids, exclude=version.pk)
        if parents:
            version.derived_from.set(parents)
        if enqueue:
            from workers.tasks.exports import export_version as task

            task.delay_on_commit(version.pk)
    return version


def previous_versions(dataset_ids: list[int], *, exclude: int) -> list[DatasetVersion]:
    """Lineage: the latest ready version of each chosen dataset, which this cut supersedes."""
    parents: dict[int, DatasetVersion] = {}
    for dataset_id in sorted(dataset_ids):
        latest = (
            DatasetVersion.objects.filter(status=DatasetVersion.Status.READY, datasets=dataset_id)
            .exclude(pk=exclude)
            .order_by("-id")
            .first()
        )
        if latest is not None:
            parents[latest.pk] = latest
    return list(parents.values())


def describe_filters(filters: Filters) -> str:
    parts = [f"status={filters.status}"]
    if filters.origins:
        parts.append("origins=" + ",".join(filters.origins))
    if filters.min_score is not None:
        parts.append(f"min_score={filters.min_score}")
    if filters.exclude_flagged:
        parts.append("flagged excluded")
    return ", ".join(parts)


# --- writing ----------------------------------------------------------------------------------


def export_version(
    *, version_id: int, progress_callback: ProgressCallback | None = None
) -> DatasetVersion | None:
    """Write and publish the version; None when it is already ready (a redelivered task).

    Progress (phase, rows written, total) goes to the version row about once a second, and to
    ``progress_callback`` (the command line's bar) at the same rate.
    """
    claimed = (
        DatasetVersion.objects.filter(pk=version_id)
        .exclude(status=DatasetVersion.Status.READY)
        .update(status=DatasetVersion.Status.RUNNING, started_at=timezone.now(), error="")
    )
    if not claimed:
        return None
    DatasetVersion.objects.filter(pk=version_id).update(attempts=F("attempts") + 1)
    version = DatasetVersion.objects.get(pk=version_id)
    target = _target(version)
    target.remove_stale_temporaries()
    tmp = target.temporary()
    progress = ExportProgress(version_id, callback=progress_callback)
    try:
        manifest = write_files(version, tmp, progress=progress)
        progress.start_phase("publishing")
        location = target.publish(tmp, manifest["content_sha256"])
        progress.close()
    except BaseException as exc:
        progress.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            DatasetVersion.objects.filter(pk=version_id).update(
                status=DatasetVersion.Status.FAILED,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                finished_at=timezone.now(),
            )
        raise
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version_id).update(
            status=DatasetVersion.Status.READY,
            location=location,
            content_sha256=manifest["content_sha256"],
            counts=manifest["counts"],
            size_bytes=manifest["size_bytes"],
            manifest=manifest,
            finished_at=timezone.now(),
            # The final figures on the row itself, whatever the progress thread managed to write.
            progress_phase="done",
            progress_done=progress.done,
            progress_total=max(progress.total, progress.done),
        )
        version.refresh_from_db()
        transaction.on_commit(lambda: version_ready(version_id=version_id))
    return version


def version_ready(*, version_id: int) -> None:
    """After commit: tell webhooks, and start the "train on export" job if one was asked for."""
    from webapp.exports import webhooks
    from webapp.exports.training import TrainingJobError, start_training_job

    version = DatasetVersion.objects.get(pk=version_id)
    webhooks.send_event(
        "version.ready",
        {
            "version": version.name,
            "id": version.pk,
            "content_sha256": version.content_sha256,
            "counts": version.counts,
            "location": version.location,
        },
    )
    if version.train_on_ready and not version.jobs.exists():
        cfg = dict(version.train_on_ready)
        try:
            start_training_job(
                version=version,
                kind=cfg.pop("kind", "stage1"),
                preset=cfg.pop("preset", ""),
                gpus=int(cfg.pop("gpus", 1)),
                config=cfg.pop("config", {}),
                created_by=version.created_by,
            )
        except (TrainingJobError, ValueError) as exc:
            # The version itself is complete; say on it why its job did not start.
            log.warning("version %s: train on export not started: %s", version.name, exc)
            DatasetVersion.objects.filter(pk=version_id).update(
                error=f"train on export not started: {exc}"
            )


def write_files(
    version: DatasetVersion, root: Path, *, progress: ExportProgress | None = None
) -> dict[str, Any]:
    """Stream the version's rows into ``root`` and return the manifest written there."""
    filters = parse_filters(version.filters)
    datasets = sorted(version.datasets.all(), key=lambda d: d.name)
    ids = [d.pk for d in datasets]
    with (
        _snapshot(),
        VersionWriter(
            root, reference=version.reference, shard_bytes=settings.FGAM_EXPORT_SHARD_BYTES
        ) as writer,
    ):
        if progress is not None:
            progress.start_phase("counting")
            total = (
                region_queryset(ids, filters).count()
                + question_queryset(ids).count()
                + trajectory_queryset(ids, filters).count()
            )
            progress.start_phase("stage1", total=total)
        held_out = _write_stage1(writer, ids, filters, version.reference, progress=progress)
        if progress is not None:
            progress.start_phase("questions")
        _write_questions(writer, ids, filters, progress=progress)
        if progress is not None:
            progress.start_phase("trajectories")
        write_trajectories(writer, ids, filters, reference=version.reference, progress=progress)
        if progress is not None:
            progress.start_phase("hashing")
        if writer.regions == 0 and not any(
            w.rows for w in (writer.rl_prompts, writer.eval_items, writer.sft, writer.rm)
        ):
            raise ExportError(
                f"empty selection: no region of {', '.join(d.name for d in datasets)} passes "
                f"the filters ({describe_filters(filters)}) and there are no questions or "
                "trajectories"
            )
        manifest = writer.finish(
            {
                "id": version.name,
                "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
                "created_by": version.created_by.get_username() if version.created_by else "",
                "sources": [{"id": d.pk, "name": d.name} for d in datasets],
                "filters": version.filters,
                "reference": version.reference,
                "derived_from": sorted(p.name for p in version.derived_from.all()),
                "counts": held_out,
            }
        )
    manifest["size_bytes"] = folder_size(root)
    return manifest


class _snapshot:
    """One transaction for every read; REPEATABLE READ on PostgreSQL when we open it.

    ``SET TRANSACTION`` must be the transaction's first statement, so it is only sent when
    this block starts the transaction (not inside an outer one, as in a test's wrapper).
    """

    def __enter__(self) -> None:
        outermost = not connection.in_atomic_block
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def __exit__(self, *exc: Any) -> None:
        self._atomic.__exit__(*exc)


# ``training.data.writer.REGION_ROW`` then the image id: ``_WRITTEN`` cuts it off (in C).
REGION_COLUMNS = (*REGION_ROW, "image_id")
IMAGE_COLUMNS = (
    "id",
    "sha256",
    "width",
    "height",
    "first_caption",
    "uri",
    "storage_path",
    "format",
)
_IMAGE_ID = itemgetter(len(REGION_ROW))
_WRITTEN = itemgetter(*range(len(REGION_ROW)))


def _region_rows(ids: list[int], filters: Filters) -> AbstractContextManager[Iterator[list[tuple]]]:
    """Regions in (image sha256, image id, region id) order as ``REGION_COLUMNS`` tuples, in
    chunks (``rows.chunked_rows``). Image fields are left out: they come from ``_image_rows``
    in the same order, so no per-region copy of captions is sent."""
    queryset = (
        region_queryset(ids, filters)
        .order_by("image__sha256", "image_id", "id")
        .values_list(*REGION_COLUMNS)
    )
    return chunked_rows(queryset, chunk_size=settings.FGAM_EXPORT_CHUNK_SIZE)


def _image_runs(chunks: Iterator[list[tuple]]) -> Iterator[tuple[int, Iterator[tuple]]]:
    """``(image id, its rows)`` per run of one image's rows in each chunk: the merge below works
    per run, not per row. An image whose rows straddle two chunks gives two runs in a row."""
    for chunk in chunks:
        yield from groupby(chunk, _IMAGE_ID)


def _image_rows(ids: list[int]) -> Generator[tuple, None, None]:
    # Only the first caption goes into a record: the database extracts it as text, so no
    # caption list is sent and decoded per image (importers write captions as strings).
    queryset = (
        Image.objects.filter(dataset_id__in=ids)
        .annotate(first_caption=KT("captions__0"))
        .order_by("sha256", "id")
        .values_list(*IMAGE_COLUMNS)
    )
    return queryset.iterator(chunk_size=settings.FGAM_EXPORT_CHUNK_SIZE)


def _write_stage1(
    writer: VersionWriter,
    ids: list[int],
    filters: Filters,
    reference: bool,
    *,
    progress: ExportProgress | None = None,
) -> dict[str, int]:
    """One sample per distinct image sha256 (an image in two chosen datasets is one sample).

    Two server-side cursors in the same order are merged: each run of region rows of one image
    advances the image cursor to that image (images without a selected region are passed over).
    """
    resolver = ImageSource()
    held_images = held_regions = 0
    current: str | None = None
    head: dict[str, Any] = {}
    regions: list[tuple] = []
    source: tuple[str, str, str] = ("", "", "")
    fraction = filters.holdout_fraction
    images = _image_rows(ids)
    image: tuple = (None,)

    def flush() -> None:
        nonlocal held_images, held_regions
        if current is None:
            return
        if progress is not None:
            progress.advance(len(regions))
        if fraction and key_in_holdout(current, fraction):
            held_images += 1
            held_regions += len(regions)
            return
        # Regions stay the database's tuples (REGION_ROW order): the writer serialises them
        # without a dict per region, the hot path of a large export.
        if reference:
            head["uri"] = resolver.reference(current, *source)
            writer.add_stage1_rows(current, head, regions, None)
        else:
            writer.add_stage1_rows(current, head, regions, resolver.read(current, *source))

    try:
        with _region_rows(ids, filters) as chunks:
            for image_id, run in _image_runs(chunks):
                if image[0] != image_id:
                    for image in images:
                        if image[0] == image_id:
                            break
                    else:
                        raise RuntimeError(
                            f"image {image_id} of a region is missing from the snapshot"
                        )
                    _, sha, width, height, caption, uri, storage_path, fmt = image
                    if sha != current:
                        flush()
                        current = sha
                        regions = []
                        head = {
                            "image": sha,
                            "width": width,
                            "height": height,
                            "caption": caption or "",
                        }
                        source = (storage_path, uri, fmt)
                regions.extend(map(_WRITTEN, run))
        flush()
    finally:
        # Close the image cursor inside the snapshot, also when failing midway: closing it
        # later, after the rollback, would fail on PostgreSQL (``chunked_rows`` closes its own).
        images.close()
    return {"heldout_images": held_images, "heldout_regions": held_regions}


def _write_questions(
    writer: VersionWriter,
    ids: list[int],
    filters: Filters,
    *,
    progress: ExportProgress | None = None,
) -> None:
    """RL prompts for training images; the held-out images' questions go to eval/ only."""
    rows = (
        question_queryset(ids)
        .order_by("image__sha256", "source_key", "id")
        .values_list("id", "image__sha256", "question", "reference")
        .iterator(chunk_size=settings.FGAM_EXPORT_CHUNK_SIZE)
    )
    fraction = filters.holdout_fraction
    for qid, sha, question, reference in rows:
        row = {"id": qid, "image": sha, "question": question, "reference": reference}
        if progress is not None:
            progress.advance(1)
        if fraction and key_in_holdout(sha, fraction):
            writer.eval_items.add(row)
        else:
            writer.rl_prompts.add(row)


def trajectory_queryset(dataset_ids: list[int], filters: Filters):
    """The trajectories a cut takes: approved ones (``approved_trajectories_only``, the
    default), or else every one that was not rejected (generated and in-review ones too: a
    curator who turns the flag off asks for the unreviewed output of the loop)."""
    from webapp.trajectories.models import Trajectory

    queryset = Trajectory.objects.filter(dataset_id__in=dataset_ids)
    if filters.approved_trajectories_only:
        return queryset.filter(status=Trajectory.Status.APPROVED)
    return queryset.exclude(status=Trajectory.Status.REJECTED)


TRAJECTORY_COLUMNS = (
    "id", "image__sha256", "question", "final_answer", "reference_answer", "status",
    "question_item_id", "image__storage_path", "image__uri", "image__format",
)  # fmt: skip


def write_trajectories(
    writer: VersionWriter,
    ids: list[int],
    filters: Filters,
    *,
    reference: bool = False,
    progress: ExportProgress | None = None,
) -> None:
    """Stage-2 SFT, RM and LLaVA rows of the chosen trajectories (``webapp.exports.stage2``
    has the row rules), streamed from three server-side cursors in the same order.

    Only training images enter ``stage2/``: a trajectory of a held-out image is left out, and
    its question goes to ``eval/items.jsonl`` unless it came from a question item (those are
    there already). The RM evidence is the image's accepted, unflagged regions as text
    (``evidence_text``, regions by id; an image in two chosen datasets pools both). In
    embedded mode the image bytes of every trajectory image are in ``images/``; in reference
    mode every row carries the image's ``uri``, as Stage-1 records do.
    """
    from training.stage2.prompts import evidence_text
    from webapp.exports.stage2 import StepRow, trajectory_records
    from webapp.trajectories.models import Trajectory, TrajectoryStep

    chunk = settings.FGAM_EXPORT_CHUNK_SIZE
    chosen = trajectory_queryset(ids, filters)
    trajectories = (
        chosen.order_by("image__sha256", "id")
        .values_list(*TRAJECTORY_COLUMNS)
        .iterator(chunk_size=chunk)
    )
    steps = (
        TrajectoryStep.objects.filter(trajectory__in=chosen.values("id"))
        .order_by("trajectory__image__sha256", "trajectory_id", "k")
        .values_list("trajectory_id", "k", "response", "feedback", "error_types")
        .iterator(chunk_size=chunk)
    )
    regions = (
        Region.objects.filter(
            image__dataset_id__in=ids,
            status=Region.Status.ACCEPTED,
            flagged=False,
            image__sha256__in=chosen.values("image__sha256"),
        )
        .order_by("image__sha256", "id")
        .values_list("image__sha256", "x0", "y0", "x1", "y1", "phrase", "caption")
        .iterator(chunk_size=chunk)
    )
    resolver = ImageSource()
    fraction = filters.holdout_fraction
    evidence_sha: str | None = None
    evidence = ""
    try:
        step_row: tuple | None = next(steps, None)
        region_row: tuple | None = next(regions, None)
        for tid, sha, question, final, ref, status, item_id, path, uri, fmt in trajectories:
            # Both other cursors are in (sha, ...) order too: take this trajectory's steps and,
            # on a new image, its regions. Rows of a held-out image are read and dropped.
            own_steps = []
            while step_row is not None and step_row[0] == tid:
                own_steps.append(StepRow(step_row[1], step_row[2], step_row[3], step_row[4] or []))
                step_row = next(steps, None)
            if sha != evidence_sha:
                evidence_sha, own_regions = sha, []
                while region_row is not None and region_row[0] == sha:
                    _, x0, y0, x1, y1, phrase, caption = region_row
                    own_regions.append({"box": [x0, y0, x1, y1], "phrase": phrase,
                                        "caption": caption})  # fmt: skip
                    region_row = next(regions, None)
                evidence = evidence_text(own_regions)
            if progress is not None:
                progress.advance(1)
            if fraction and key_in_holdout(sha, fraction):
                if item_id is None:
                    writer.eval_items.add(
                        {"id": f"trajectory-{tid}", "image": sha, "question": question,
                         "reference": ref or None, "trajectory": tid}
                    )  # fmt: skip
                continue
            extra: dict[str, Any] = {}
            if reference:
                extra["uri"] = resolver.reference(sha, path, uri, fmt)
            elif not writer.has_image(sha):
                writer.add_image(sha, *resolver.read(sha, path, uri, fmt))
            records = trajectory_records(
                trajectory={"id": tid, "image": sha, "question": question, "final_answer": final},
                steps=own_steps,
                evidence=evidence,
                approved=status == Trajectory.Status.APPROVED,
                extra=extra,
            )
            for row in records.sft:
                writer.sft.add(row)
            for row in records.rm:
                writer.rm.add(row)
            if records.llava is not None:
                writer.llava.add(records.llava)
    finally:
        trajectories.close()
        steps.close()
        regions.close()


class ImageSource:
    """Image bytes (embedded mode) or a stable reference (reference mode) for one image."""

    def __init__(self) -> None:
        self.storage = default_storage
        try:
            self.storage.path("")
            self.local = True
        except NotImplementedError:
            self.local = False

    def reference(self, sha: str, storage_path: str, uri: str, fmt: str) -> str:
        if storage_path:
            if self.local:
                return Path(self.storage.path(storage_path)).resolve().as_uri()
            bucket = getattr(self.storage, "bucket_name", "")
            prefix = getattr(self.storage, "location", "")
            key = f"{prefix.strip('/')}/{storage_path}" if prefix else storage_path
            return f"s3://{bucket}/{key}" if bucket else storage_path
        if uri:
            return uri
        raise ExportError(f"image {sha}: neither stored bytes nor a source uri to refer to")

    def read(self, sha: str, storage_path: str, uri: str, fmt: str) -> tuple[bytes, str]:
        if not storage_path:
            raise ExportError(
                f"image {sha} has no stored bytes (only {uri or 'no uri'}); cut the version "
                "in reference mode instead"
            )
        ext = Path(storage_path).suffix.lstrip(".").lower() or (fmt or "jpg").lower()
        ext = "jpg" if ext == "jpeg" else ext
        with self.storage.open(storage_path, "rb") as handle:
            return handle.read(), ext


# --- publishing -------------------------------------------------------------------------------


class _Target:
    """Where a version's folder goes, and how it gets there atomically."""

    def __init__(self, version: DatasetVersion) -> None:
        self.version = version

    def temporary(self) -> Path:
        raise NotImplementedError

    def remove_stale_temporaries(self) -> None:
        parent = self.temporary_parent()
        if parent.is_dir():
            for stale in parent.glob(f".tmp-{self.version.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def temporary_parent(self) -> Path:
        raise NotImplementedError

    def publish(self, tmp: Path, sha: str) -> str:
        raise NotImplementedError


class _FolderTarget(_Target):
    """A local folder: write beside the final place, then one ``rename`` (atomic on POSIX)."""

    def __init__(self, version: DatasetVersion, parent: Path, location_of) -> None:
        super().__init__(version)
        self.parent = parent
        self.location_of = location_of

    def temporary_parent(self) -> Path:
        return self.parent

    def temporary(self) -> Path:
        self.parent.mkdir(parents=True, exist_ok=True)
        path = self.parent / f".tmp-{self.version.name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, sha: str) -> str:
        final = self.parent / self.version.name
        try:
            os.rename(tmp, final)
        except OSError:
            # Another delivery of the same task finished first: the content is deterministic,
            # so an existing complete copy with the same hash is this version.
            if (final / "manifest.json").is_file() and content_sha256(final) == sha:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        return self.location_of(final)


class _StorageTarget(_Target):
    """Remote storage (S3): write locally, upload every file, ``manifest.json`` last."""

    def __init__(self, version: DatasetVersion) -> None:
        super().__init__(version)
        self.prefix = f"{settings.FGAM_VERSIONS_PREFIX}/{version.name}"

    def temporary_parent(self) -> Path:
        return Path(settings.FGAM_EXPORT_TMP_DIR)

    def temporary(self) -> Path:
        parent = self.temporary_parent()
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f".tmp-{self.version.name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, sha: str) -> str:
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != "manifest.json")
        # A dead attempt may have left objects this one does not write (the data changed in
        # between, so fewer shards): they would be listed as the version's files. The version
        # is not ready, so nobody reads the prefix yet; clear it first.
        self._delete_prefix(self.prefix)
        for path in [*files, tmp / "manifest.json"]:
            name = f"{self.prefix}/{path.relative_to(tmp).as_posix()}"
            with path.open("rb") as handle:
                default_storage.save(name, File(handle))
        shutil.rmtree(tmp, ignore_errors=True)
        return self.prefix

    def _delete_prefix(self, prefix: str) -> None:
        try:
            dirs, names = default_storage.listdir(prefix)
        except FileNotFoundError:
            return
        for name in names:
            default_storage.delete(f"{prefix}/{name}")
        for folder in dirs:
            self._delete_prefix(f"{prefix}/{folder}")


def _target(version: DatasetVersion) -> _Target:
    if version.storage == DatasetVersion.Storage.PATH:
        return _FolderTarget(version, Path(version.location), lambda final: str(final))
    try:
        root = Path(default_storage.path(settings.FGAM_VERSIONS_PREFIX))
    except NotImplementedError:
        return _StorageTarget(version)
    prefix = settings.FGAM_VERSIONS_PREFIX
    return _FolderTarget(version, root, lambda final: f"{prefix}/{final.name}")


# --- reading back -----------------------------------------------------------------------------


def version_files(version: DatasetVersion) -> list[str]:
    """Relative paths of a ready version's files, manifest first."""
    return ["manifest.json", *_list_files(version)]


def _list_files(version: DatasetVersion) -> list[str]:
    root = local_path(version)
    if root is not None:
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name != "manifest.json"
        )
    out: list[str] = []

    def walk(prefix: str) -> None:
        dirs, names = default_storage.listdir(prefix)
        out.extend(f"{prefix}/{n}"[len(version.location) + 1 :] for n in names)
        for d in dirs:
            walk(f"{prefix}/{d}")

    walk(version.location)
    return sorted(p for p in out if p != "manifest.json")


def local_path(version: DatasetVersion) -> Path | None:
    """The folder of a ready version when it is on this machine's filesystem."""
    if version.storage == DatasetVersion.Storage.PATH:
        return Path(version.location)
    try:
        return Path(default_storage.path(version.location))
    except NotImplementedError:
        return None


def open_file(version: DatasetVersion, rel: str):
    root = local_path(version)
    if root is not None:
        return (root / rel).open("rb")
    return default_storage.open(f"{version.location}/{rel}", "rb")
