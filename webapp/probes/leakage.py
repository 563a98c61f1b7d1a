"""The leakage guard, both directions: a probe image is never trained on.

1. *Versions cut after a probe set leave its images out.* ``webapp.exports.writing.ProbeGuard``
   reads the ``ProbeImage`` rows of ready sets inside the cut's snapshot and skips Stage-1
   samples, questions and trajectories of those images; the version's manifest names the probe
   sets and counts the images left out (``leakage_guard``, ``counts.probe_images_excluded``).
   (It lives there, reading only this app's models, so that the two apps' code imports one way:
   probes -> exports.)
2. *A probe set over images that a ready version already holds is refused* unless
   ``allow_seen``. How a version records its images: no table lists them (a version's rows are
   chosen by filters at cut time), but its files do: ``stage1/index.parquet`` has one row per
   region with the image sha256 (every Stage-1 image has at least one region), and the Stage-2
   and evaluation rows carry ``"image"``. Reading every version for every build would cost a
   pass over all of them, so the database narrows first: only ready versions of a dataset that
   holds an image with one of the probe sha256s can contain it (one indexed query; usually
   none). Only those versions' files are read, the parquet file's ``image`` column alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from webapp.exports.models import DatasetVersion
from webapp.exports.storage import open_file, version_files

_CHUNK = 5000
# The files of a version whose rows name an image sha256 under "image" (besides Stage-1).
_ROW_FILES = ("stage2/sft.jsonl", "stage2/rm.jsonl", "stage2/rl_prompts.jsonl", "eval/items.jsonl")


@dataclass
class Seen:
    """Probe images already in ready versions: per version name, how many."""

    versions: dict[str, int] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.images)

    def describe(self) -> str:
        named = ", ".join(f"{name} ({n})" for name, n in sorted(self.versions.items()))
        return f"{len(self.images)} probe image(s) are already in ready version(s) {named}"

    def record(self) -> dict:
        return {"images": len(self.images), "versions": dict(sorted(self.versions.items()))}


def seen_in_versions(shas: Iterable[str]) -> Seen:
    """Which of ``shas`` the ready dataset versions already hold (module docstring, 2)."""
    wanted = set(shas)
    seen = Seen()
    if not wanted:
        return seen
    ready = DatasetVersion.objects.filter(status=DatasetVersion.Status.READY)
    ordered = sorted(wanted)
    suspect_ids: set[int] = set()
    for start in range(0, len(ordered), _CHUNK):  # SQLite bounds the number of parameters
        chunk = ordered[start : start + _CHUNK]
        suspect_ids.update(
            ready.filter(datasets__images__sha256__in=chunk).values_list("id", flat=True)
        )
    suspects = ready.filter(id__in=sorted(suspect_ids)).order_by("id")
    for version in suspects:
        inside = wanted & version_images(version)
        if inside:
            seen.versions[version.name] = len(inside)
            seen.images |= inside
    return seen


def version_images(version: DatasetVersion) -> set[str]:
    """Every image sha256 a ready version's files name."""
    import pyarrow.parquet as pq

    files = set(version_files(version))
    found: set[str] = set()
    if "stage1/index.parquet" in files:
        with open_file(version, "stage1/index.parquet") as handle:
            column = pq.read_table(handle, columns=["image"]).column("image")
            found.update(column.unique().to_pylist())
    for rel in _ROW_FILES:
        if rel not in files:
            continue
        with open_file(version, rel) as handle:
            for line in handle:
                if line.strip():
                    image = json.loads(line).get("image")
                    if image:
                        found.add(image)
    return found
