"""Building probe sets: validate the request, read the curated regions, draw the questions,
guard against leakage, write and publish the folder.

1. ``start_probe_set`` checks what is cheap to check (datasets exist, kind and split agree,
   numbers are positive; a bad one is a ``ProbeBuildError`` naming it), records the
   ``ProbeSet`` (status ``building``) and enqueues ``fgam.default.build_probes`` once the
   transaction commits (``enqueue=False``: the command line builds in process).
2. ``build_probe_set`` reads everything it needs in one snapshot (REPEATABLE READ on
   PostgreSQL): the vocabulary (every name of an accepted region of the chosen datasets,
   reviewed image or not: what random negatives are drawn from), the names of the accepted
   regions of exhaustively reviewed images (phrases normalised by ``catalog.vocabulary`` with
   each dataset's aliases; an image in two chosen datasets pools both copies' regions), then
   the boxes and image sources of the drawn images only. ``sampling`` draws the questions.
3. The leakage guard (``leakage.seen_in_versions``) refuses images a ready version holds
   unless ``allow_seen``, which the manifest records with what was seen.
4. The folder is written by ``training.probes.layout.ProbeSetWriter`` into a hidden temporary
   folder beside its final place and renamed into place in one ``rename``; the row becomes
   ``ready`` with its ``ProbeImage`` rows in one transaction. Any failure leaves the row
   ``failed`` with the error and removes the temporary folder: nothing half-written is ready.

Folders go under ``FGAM_PROBES_DIR`` (``var/probes`` by default), or under ``--out DIR``: a
local folder in both cases, since the scorer (``python -m training bench --probes DIR``) reads
one. Reading names as (image, phrase) pairs costs one indexed pass over the accepted regions;
only the distinct phrases are normalised (``_Namer`` caches them).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.data.layout import content_sha256
from training.probes.layout import Probe, ProbeSetWriter
from webapp.catalog.models import Dataset, Image
from webapp.catalog.vocabulary import aliases_of, normalise
from webapp.core.snapshot import read_snapshot
from webapp.exports.writing import ImageSource
from webapp.probes.leakage import seen_in_versions
from webapp.probes.models import ProbeImage, ProbeSet
from webapp.probes.sampling import (
    POPE_SPLITS,
    ImageObjects,
    Plan,
    PlannedProbe,
    SamplingError,
    plan_pope,
    plan_spatial,
)
from webapp.regions.models import Region

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]  # (phase, done, total)
REVIEWED_RULE = (
    "only images marked exhaustively reviewed (Image.exhaustively_reviewed_at set) are probed; "
    "a name is present when an accepted region of the image normalises to it, absent otherwise"
)
MAX_IMAGES = 20_000  # a list of drawn sha256s is one query parameter each (SQLite bounds them)
MAX_PER_IMAGE = 50


class ProbeBuildError(ValueError):
    """A probe set that cannot be built as asked; the message says what to change."""


def probes_dir() -> Path:
    return Path(getattr(settings, "FGAM_PROBES_DIR", Path(settings.VAR_DIR) / "probes"))


def _datasets(names: Iterable[str]) -> list[Dataset]:
    names = sorted(set(names))
    if not names:
        raise ProbeBuildError("choose at least one dataset")
    found = {d.name: d for d in Dataset.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ProbeBuildError(f"no dataset named {', '.join(map(repr, missing))}")
    return [found[n] for n in names]


def check_request(kind: str, split: str | None, images: int, per_image: int) -> str:
    """The split to build (``kind`` decides it for spatial probes), or a ``ProbeBuildError``."""
    if kind not in ProbeSet.Kind.values:
        raise ProbeBuildError(f"kind is one of {', '.join(ProbeSet.Kind.values)}, not {kind!r}")
    if kind == ProbeSet.Kind.SPATIAL:
        if split not in (None, "", "spatial"):
            raise ProbeBuildError(f"spatial probes have the one split 'spatial', not {split!r}")
        split = "spatial"
    else:
        split = split or "random"
        if split not in POPE_SPLITS:
            raise ProbeBuildError(f"POPE split is one of {', '.join(POPE_SPLITS)}, not {split!r}")
    if not 1 <= images <= MAX_IMAGES:
        raise ProbeBuildError(f"images must be between 1 and {MAX_IMAGES}, not {images}")
    if not 1 <= per_image <= MAX_PER_IMAGE:
        raise ProbeBuildError(f"per_image must be between 1 and {MAX_PER_IMAGE}, not {per_image}")
    return split


def start_probe_set(
    *,
    datasets: Iterable[str],
    kind: str,
    split: str | None = None,
    images: int = 500,
    per_image: int = 3,
    seed: int = 0,
    allow_seen: bool = False,
    reference: bool = False,
    out_dir: str | Path | None = None,
    created_by=None,
    enqueue: bool = True,
) -> ProbeSet:
    """Record a probe set to build and (unless ``enqueue=False``) hand it to the task."""
    chosen = _datasets(datasets)
    split = check_request(kind, split, int(images), int(per_image))
    params: dict[str, Any] = {
        "images": int(images),
        "per_image": int(per_image),
        "reference": bool(reference),
    }
    if out_dir:
        params["out_dir"] = str(Path(out_dir).resolve())
    with transaction.atomic():
        probe_set = ProbeSet.objects.create(
            set_id=f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
            kind=kind,
            split=split,
            seed=int(seed),
            params=params,
            allow_seen=bool(allow_seen),
            created_by=created_by,
            progress_phase="queued",
        )
        probe_set.datasets.set(chosen)
        if enqueue:
            from webapp.probes.tasks import build_probes

            build_probes.delay_on_commit(probe_set.pk)
    return probe_set


class _Progress:
    """Phase and done/total on the row (at most once a second) and to ``callback``."""

    def __init__(self, pk: int, callback: ProgressCallback | None, every_s: float = 1.0):
        self.pk, self.callback, self.every_s = pk, callback, every_s
        self._next_at = 0.0

    def __call__(self, phase: str, done: int = 0, total: int = 0, *, force: bool = False):
        now = time.monotonic()
        if not force and now < self._next_at and done < total:
            return
        self._next_at = now + self.every_s
        ProbeSet.objects.filter(pk=self.pk).update(
            progress_phase=phase, progress_done=done, progress_total=total
        )
        if self.callback is not None:
            self.callback(phase, done, total)


def build_probe_set(
    *,
    probe_set_id: int,
    progress_callback: ProgressCallback | None = None,
    lmms_eval: bool = True,
) -> ProbeSet:
    """Build, check, write and publish one recorded probe set (module docstring).

    A ready set is returned as it is (a redelivered task). ``lmms_eval=False`` leaves out the
    lmms-eval task folder; it is also left out, and the manifest says so, for a reference-mode
    set whose images are remote (the task's parquet embeds image bytes).
    """
    probe_set = ProbeSet.objects.get(pk=probe_set_id)
    if probe_set.is_ready:
        return probe_set
    progress = _Progress(probe_set.pk, progress_callback)
    parent = Path(probe_set.params.get("out_dir") or probes_dir())
    tmp = parent / f".tmp-{probe_set.set_id}-{uuid.uuid4().hex[:8]}"
    try:
        progress("reading", force=True)
        datasets = sorted(probe_set.datasets.all(), key=lambda d: d.name)
        plan, vocabulary, sources, boxes = _read_and_plan(probe_set, datasets, progress)
        progress("checking", force=True)
        shas = sorted({p.image for p in plan.probes})
        seen = seen_in_versions(shas)
        if seen and not probe_set.allow_seen:
            raise ProbeBuildError(
                f"{seen.describe()}: a model trained on them would be probed on its training "
                "images. Build over other images, or pass --allow-seen (allow_seen) to build "
                "anyway; the manifest then records what was seen"
            )
        parent.mkdir(parents=True, exist_ok=True)
        extra = {
            "sources": [{"id": d.pk, "name": d.name} for d in datasets],
            "vocabulary_size": len(vocabulary),
            "seen": seen.record() if seen else None,
        }
        manifest = _write(
            probe_set, tmp, plan, sources, boxes, progress, lmms_eval=lmms_eval, extra=extra
        )
        final = parent / probe_set.set_id
        try:
            os.rename(tmp, final)
        except OSError:
            # Another delivery of the same task finished first: the content is deterministic,
            # so a complete copy with the same hash is this set.
            if not (final / "manifest.json").is_file() or (
                content_sha256(final) != manifest["content_sha256"]
            ):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            ProbeSet.objects.filter(pk=probe_set.pk).update(
                status=ProbeSet.Status.FAILED,
                error=f"{exc}"[:2000] if isinstance(exc, ProbeBuildError | SamplingError)
                else f"{type(exc).__name__}: {exc}"[:2000],
                progress_phase="failed",
                finished_at=timezone.now(),
            )  # fmt: skip
        raise
    with transaction.atomic():
        ProbeImage.objects.bulk_create(
            [ProbeImage(probe_set_id=probe_set.pk, sha256=sha) for sha in shas], batch_size=5000
        )
        ProbeSet.objects.filter(pk=probe_set.pk).update(
            status=ProbeSet.Status.READY,
            path=str(final.resolve()),
            content_sha256=manifest["content_sha256"],
            counts=manifest["counts"],
            manifest=manifest,
            error="",
            progress_phase="done",
            progress_done=len(plan.probes),
            progress_total=len(plan.probes),
            finished_at=timezone.now(),
        )
    probe_set.refresh_from_db()
    if progress_callback is not None:
        progress_callback("done", len(plan.probes), len(plan.probes))
    return probe_set


class _Namer:
    """Phrase -> vocabulary name per dataset, each distinct phrase normalised once."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.aliases = {d.pk: aliases_of(d) for d in datasets}
        self._cache: dict[tuple[int, str], str] = {}

    def __call__(self, dataset_id: int, phrase: str) -> str:
        key = (dataset_id, phrase)
        name = self._cache.get(key)
        if name is None:
            name = self._cache[key] = normalise(phrase, self.aliases[dataset_id])
        return name


def _read_and_plan(probe_set: ProbeSet, datasets: list[Dataset], progress: _Progress):
    ids = [d.pk for d in datasets]
    namer = _Namer(datasets)
    params = probe_set.params
    accepted = Region.objects.filter(status=Region.Status.ACCEPTED).exclude(phrase="")
    reviewed = Image.objects.filter(dataset_id__in=ids).exhaustively_reviewed()
    with read_snapshot():
        vocabulary = sorted(
            {
                name
                for dataset_id, phrase in accepted.filter(image__dataset_id__in=ids)
                .order_by()
                .values_list("image__dataset_id", "phrase")
                .distinct()
                if (name := namer(dataset_id, phrase))
            }
        )
        # Every copy of a reviewed image in the chosen datasets counts: a "cat" accepted on an
        # unreviewed copy still means the cat is there.
        copies = Image.objects.filter(dataset_id__in=ids, sha256__in=reviewed.values("sha256"))
        copy_of = {
            pk: (sha, ds) for pk, sha, ds in copies.values_list("id", "sha256", "dataset_id")
        }
        progress("reading", 1, 2, force=True)
        regions = accepted.filter(image__in=copies.values("id")).order_by()
        if probe_set.kind == ProbeSet.Kind.POPE:
            images = _names_of(regions, copy_of, namer)
            progress("sampling", force=True)
            plan = plan_pope(
                images,
                vocabulary=vocabulary,
                split=probe_set.split,
                count=params["images"],
                per_image=params["per_image"],
                seed=probe_set.seed,
            )
            drawn = sorted({p.image for p in plan.probes})
            drawn_copies = copies.filter(sha256__in=drawn).values("id")
            boxes = _first_boxes(accepted.filter(image__in=drawn_copies), copy_of, namer)
        else:
            images = _regions_of(regions, copy_of, namer)
            progress("sampling", force=True)
            plan = plan_spatial(
                images, count=params["images"], per_image=params["per_image"],
                seed=probe_set.seed,
            )  # fmt: skip
            drawn = sorted({p.image for p in plan.probes})
            boxes = {}
        sources = _image_sources(ids, drawn)
    return plan, vocabulary, sources, boxes


# Image id -> (sha256, dataset id) of every copy of a reviewed image in the chosen datasets.
CopyMap = dict[int, tuple[str, int]]


def _names_of(regions, copy_of: CopyMap, namer: _Namer) -> list[ImageObjects]:
    """Names per image from plain (image id, phrase) rows, deduplicated here.

    Measured at 1M regions (tests/bench/bench_probes.py): ``DISTINCT`` in the database spills
    its hash to disk and a server-side cursor makes PostgreSQL choose a fast-start plan, each
    about 3x slower than fetching the rows at once; the rows are those of reviewed images only.
    """
    phrases_of: dict[int, set[str]] = {}
    for image_id, phrase in regions.values_list("image_id", "phrase"):
        phrases = phrases_of.get(image_id)
        if phrases is None:
            phrases = phrases_of[image_id] = set()
        phrases.add(phrase)
    names: dict[str, set[str]] = {}
    for image_id, phrases in phrases_of.items():
        sha, dataset_id = copy_of[image_id]
        named = {namer(dataset_id, phrase) for phrase in phrases}
        named.discard("")
        names.setdefault(sha, set()).update(named)
    return [ImageObjects(sha, frozenset(n)) for sha, n in names.items()]


_BOX = ("image_id", "phrase", "x0", "y0", "x1", "y1")


def _regions_of(regions, copy_of: CopyMap, namer: _Namer) -> list[ImageObjects]:
    per: dict[str, list] = {}
    for image_id, phrase, x0, y0, x1, y1 in regions.order_by("id").values_list(*_BOX):
        sha, dataset_id = copy_of[image_id]
        per.setdefault(sha, []).append((namer(dataset_id, phrase), (x0, y0, x1, y1)))
    return [ImageObjects.of_regions(sha, regions) for sha, regions in per.items()]


def _first_boxes(regions, copy_of: CopyMap, namer: _Namer) -> dict[tuple[str, str], list]:
    """(image sha256, name) -> the box of the first accepted region (by id) of that name."""
    boxes: dict[tuple[str, str], list] = {}
    for image_id, phrase, *box in regions.order_by("id").values_list(*_BOX):
        sha, dataset_id = copy_of[image_id]
        boxes.setdefault((sha, namer(dataset_id, phrase)), box)
    return boxes


def _image_sources(ids: list[int], shas: list[str]) -> dict[str, tuple[str, str, str]]:
    """sha256 -> (storage_path, uri, format) of its first copy, one with stored bytes first."""
    sources: dict[str, tuple[str, str, str]] = {}
    rows = (
        Image.objects.filter(dataset_id__in=ids, sha256__in=shas)
        .order_by("sha256", "id")
        .values_list("sha256", "storage_path", "uri", "format")
    )
    for sha, storage_path, uri, fmt in rows:
        if sha not in sources or (storage_path and not sources[sha][0]):
            sources[sha] = (storage_path, uri, fmt)
    return sources


def _write(
    probe_set: ProbeSet,
    root: Path,
    plan: Plan,
    sources: dict[str, tuple[str, str, str]],
    boxes: dict[tuple[str, str], list],
    progress: _Progress,
    *,
    lmms_eval: bool,
    extra: dict[str, Any],
) -> dict[str, Any]:
    reference = bool(probe_set.params.get("reference"))
    resolver = ImageSource()
    total = len(plan.probes)
    progress("writing", 0, total, force=True)
    with ProbeSetWriter(root, reference=reference) as writer:
        uris: dict[str, str] = {}
        for n, planned in enumerate(plan.probes):
            planned = _with_box(planned, boxes)
            uri = None
            if reference:
                if planned.image not in uris:
                    uris[planned.image] = resolver.reference(planned.image, *sources[planned.image])
                uri = uris[planned.image]
            elif planned.image not in writer.images:
                data, ext = resolver.read(planned.image, *sources[planned.image])
                writer.add_image(planned.image, data, ext)
            writer.add(_probe(str(n), planned, probe_set.kind, uri))
            progress("writing", n + 1, total)
        progress("hashing", total, total, force=True)
        manifest = {
            "id": probe_set.set_id,
            "created_at": probe_set.created_at.isoformat().replace("+00:00", "Z"),
            "created_by": probe_set.created_by.get_username() if probe_set.created_by else "",
            "kind": probe_set.kind,
            "split": probe_set.split,
            "seed": probe_set.seed,
            "images_asked": probe_set.params["images"],
            "per_image": probe_set.params["per_image"],
            "reference": reference,
            "reviewed_image_rule": REVIEWED_RULE,
            "allow_seen": probe_set.allow_seen,
            "counts": {"candidate_images": plan.candidates, "fallback_negatives": plan.fallbacks},
            **extra,
        }
        if lmms_eval and reference and any(not u.startswith("file:") for u in uris.values()):
            # lmms-eval's parquet embeds the image bytes; remote ones are not fetched here.
            lmms_eval = False
            manifest["lmms_eval"] = "left out: the images are remote (reference mode)"
        if lmms_eval:
            return writer.finish(manifest)
        return writer.finish(manifest, lmms_eval=False)


def _with_box(planned: PlannedProbe, boxes: dict[tuple[str, str], list]) -> PlannedProbe:
    """A POPE "yes" probe gets the box of the first accepted region of its name."""
    if planned.answer == "yes" and planned.boxes is None and planned.subject is None:
        box = boxes.get((planned.image, planned.object))
        if box is not None:
            return replace(planned, boxes=(tuple(box),))
    return planned


def _probe(pid: str, planned: PlannedProbe, kind: str, uri: str | None) -> Probe:
    return Probe(
        id=pid,
        image=planned.image,
        question=planned.question,
        answer=planned.answer,
        kind=kind,
        split=planned.split,
        object=planned.object,
        subject=planned.subject,
        relation=planned.relation,
        boxes=[list(b) for b in planned.boxes] if planned.boxes else None,
        uri=uri,
    )
