"""Writing a version's files: every row read in one snapshot, streamed into the FORMATS.md layout.

``write_files`` reads inside one REPEATABLE READ transaction (one snapshot: a review landing
meanwhile is either wholly in or wholly out) through server-side cursors
(``.iterator(chunk_size=...)`` is a named cursor on PostgreSQL; the regions, the bulk of a
version, come through ``rows.chunked_rows``), and writes through ``training.data.writer``
into the folder it is given, which ``webapp.exports.storage`` then publishes.

Ordering is by image sha256, then image id, then region id; the sample key is the image's
sha256, so keys, order and the held-out split do not depend on when or where a cut is made.

Leakage guard: images held by a ready probe set (``webapp.probes``) are left out of every part
of the version (Stage-1 samples, questions, trajectories), read in the same snapshot; the
manifest names those probe sets and counts the images and regions left out
(``leakage_guard``, and ``probe_images_excluded`` among the counts).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models.fields.json import KT

from training.data.layout import key_in_holdout
from training.data.writer import REGION_ROW, VersionWriter, folder_size
from webapp.catalog.models import Image
from webapp.core.snapshot import read_snapshot
from webapp.exports.models import DatasetVersion
from webapp.exports.progress import ExportProgress
from webapp.exports.rows import chunked_rows
from webapp.exports.selection import (
    ExportError,
    Filters,
    describe_filters,
    parse_filters,
    question_queryset,
    region_queryset,
    trajectory_queryset,
)
from webapp.regions.models import Region


def write_files(
    version: DatasetVersion, root: Path, *, progress: ExportProgress | None = None
) -> dict[str, Any]:
    """Stream the version's rows into ``root`` and return the manifest written there."""
    filters = parse_filters(version.filters)
    datasets = sorted(version.datasets.all(), key=lambda d: d.name)
    ids = [d.pk for d in datasets]
    with (
        read_snapshot(),
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
        guard = ProbeGuard.read(ids)
        held_out = _write_stage1(
            writer, ids, filters, version.reference, progress=progress, guard=guard
        )
        if progress is not None:
            progress.start_phase("questions")
        _write_questions(writer, ids, filters, progress=progress, guard=guard)
        if progress is not None:
            progress.start_phase("trajectories")
        write_trajectories(
            writer, ids, filters, reference=version.reference, progress=progress, guard=guard
        )
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
                "leakage_guard": guard.record(),
                "counts": {**held_out, "probe_images_excluded": len(guard.excluded)},
            }
        )
    manifest["size_bytes"] = folder_size(root)
    return manifest


class ProbeGuard:
    """The image sha256s of ready probe sets that a cut over ``ids`` could write, and which
    of them it did leave out. Read inside the snapshot (a probe set becoming ready meanwhile
    is wholly in or out)."""

    def __init__(self, shas: set[str], probe_sets: list[str]) -> None:
        self.shas = shas
        self.probe_sets = probe_sets
        self.excluded: set[str] = set()
        self.regions = 0

    @classmethod
    def read(cls, ids: list[int]) -> ProbeGuard:
        from webapp.probes.models import ProbeImage, ProbeSet

        rows = ProbeImage.objects.filter(
            probe_set__status=ProbeSet.Status.READY,
            sha256__in=Image.objects.filter(dataset_id__in=ids).values("sha256"),
        ).values_list("sha256", "probe_set__set_id")
        shas: set[str] = set()
        sets: set[str] = set()
        for sha, set_id in rows.iterator(chunk_size=settings.FGAM_EXPORT_CHUNK_SIZE):
            shas.add(sha)
            sets.add(set_id)
        return cls(shas, sorted(sets))

    def leaves_out(self, sha: str, regions: int = 0) -> bool:
        if sha not in self.shas:
            return False
        self.excluded.add(sha)
        self.regions += regions
        return True

    def record(self) -> dict[str, Any]:
        return {
            "probe_sets": self.probe_sets,
            "probe_images_excluded": len(self.excluded),
            "probe_regions_excluded": self.regions,
        }


_NO_GUARD = ProbeGuard(set(), [])


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
    guard: ProbeGuard = _NO_GUARD,
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
        if guard.leaves_out(current, len(regions)):
            return
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
    guard: ProbeGuard = _NO_GUARD,
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
        if guard.leaves_out(sha):
            continue
        if fraction and key_in_holdout(sha, fraction):
            writer.eval_items.add(row)
        else:
            writer.rl_prompts.add(row)


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
    guard: ProbeGuard = _NO_GUARD,
) -> None:
    """Stage-2 SFT, RM and LLaVA rows of the chosen trajectories (``training.data.stage2_rows``
    has the row rules), streamed from three server-side cursors in the same order.

    Only training images enter ``stage2/``: a trajectory of a held-out image is left out, and
    its question goes to ``eval/items.jsonl`` unless it came from a question item (those are
    there already). The RM evidence is the image's accepted, unflagged regions as text
    (``evidence_text``, regions by id; an image in two chosen datasets pools both). In
    embedded mode the image bytes of every trajectory image are in ``images/``; in reference
    mode every row carries the image's ``uri``, as Stage-1 records do.
    """
    from training.data.stage2_rows import StepRow, trajectory_records
    from training.stage2.prompts import evidence_text
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
            if guard.leaves_out(sha):
                continue
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
