"""A probe set on disk (docs/formats.md, "A probe set on disk"): the writer the web app's
builder uses and the reader the scorer uses. No Django, no torch.

    <probe-set-id>/
      manifest.json            written last, left out of content_sha256
      probes.jsonl             one canonical-JSON row per yes/no question, in a fixed order
      images/ab/<sha256>.<ext> the probe images (absent in reference mode: rows carry "uri")
      lmms_eval/               an lmms-eval task folder (``training.probes.lmms_task``)

The probe ids are ``"<n>"`` within the set, not database ids, so that the same questions over
the same images give the same bytes and the same ``content_sha256`` whatever the set is called;
FORMATS.md's ``"<set>-<n>"`` names a probe across sets and is what ``Probe.global_id`` gives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from training.data.layout import content_sha256, uri_path, write_manifest
from training.data.writer import canonical_json

FORMAT = "fgam-probes"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION,)
KINDS = ("pope", "spatial")
SPLITS = ("random", "popular", "adversarial", "spatial")
ANSWERS = ("yes", "no")


class ProbeSetError(ValueError):
    """A probe set that cannot be read or a probe that breaks the format."""


@dataclass(frozen=True)
class Probe:
    id: str
    image: str  # sha256 of the image bytes
    question: str
    answer: str  # "yes" | "no"
    kind: str  # "pope" | "spatial"
    split: str  # "random" | "popular" | "adversarial" | "spatial"
    object: str
    subject: str | None = None
    relation: str | None = None
    # An extra key (readers ignore it): the accepted boxes the probe was built from, in image
    # pixels, so a wrong answer can be shown with its box: [object] for a "yes" object probe,
    # [subject, object] for a spatial one, none for an absent object.
    boxes: list[list[float]] | None = None
    uri: str | None = None  # reference mode only

    def record(self) -> dict[str, Any]:
        row = asdict(self)
        for optional in ("boxes", "uri"):
            if row[optional] is None:
                del row[optional]
        return row

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> Probe:
        known: dict[str, Any] = {name: row.get(name) for name in cls.__dataclass_fields__}
        probe = cls(**known)  # readers ignore keys they do not know
        probe.check()
        return probe

    def check(self) -> None:
        if self.answer not in ANSWERS:
            raise ProbeSetError(f"probe {self.id}: answer is 'yes' or 'no', not {self.answer!r}")
        if self.kind not in KINDS:
            raise ProbeSetError(f"probe {self.id}: kind is one of {KINDS}, not {self.kind!r}")
        if self.split not in SPLITS:
            raise ProbeSetError(f"probe {self.id}: split is one of {SPLITS}, not {self.split!r}")
        if not self.question or not self.object or len(self.image) != 64:
            raise ProbeSetError(f"probe {self.id}: question, object and image sha256 are needed")

    def global_id(self, set_id: str) -> str:
        return f"{set_id}-{self.id}"


def image_list_sha256(shas: list[str]) -> str:
    """The hash of the sorted, distinct image sha256s, one per line: what a leakage check
    compares without reading the list."""
    text = "".join(f"{sha}\n" for sha in sorted(set(shas)))
    return hashlib.sha256(text.encode()).hexdigest()


class ProbeSetWriter:
    """Writes one probe-set folder; ``finish`` hashes it and writes ``manifest.json`` last.

        with ProbeSetWriter(tmp, reference=False) as out:
            out.add_image(sha, data, "jpg")
            out.add(Probe(id="0", image=sha, question=..., answer="yes", ...))
            manifest = out.finish({"id": ..., "kind": "pope", "split": "random", "seed": 0, ...})

    Probes are written in the order they are added; the builder fixes that order.
    """

    def __init__(self, root: str | Path, *, reference: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reference = reference
        self._rows = (self.root / "probes.jsonl").open("w", encoding="utf-8", newline="\n")
        self.probes: list[Probe] = []
        self.images: dict[str, Path] = {}
        self._closed = False

    def add_image(self, sha: str, data: bytes, ext: str) -> Path:
        """``images/ab/<sha256>.<ext>``, written once per image (embedded mode)."""
        if self.reference:
            raise ProbeSetError("a reference-mode probe set holds no image bytes")
        path = self.root / "images" / sha[:2] / f"{sha}.{ext}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.images[sha] = path
        return path

    def add(self, probe: Probe) -> None:
        probe.check()
        if self.reference and probe.uri is None:
            raise ProbeSetError(f"probe {probe.id}: reference mode needs a 'uri'")
        if not self.reference and probe.image not in self.images:
            raise ProbeSetError(f"probe {probe.id}: add_image({probe.image[:12]}...) first")
        self._rows.write(canonical_json(probe.record()) + "\n")
        self.probes.append(probe)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._rows.close()

    def counts(self) -> dict[str, Any]:
        by_split: dict[str, dict[str, int]] = {}
        for probe in self.probes:
            split = by_split.setdefault(probe.split, {"yes": 0, "no": 0})
            split[probe.answer] += 1
        return {
            "probes": len(self.probes),
            "images": len({p.image for p in self.probes}),
            "yes": sum(p.answer == "yes" for p in self.probes),
            "no": sum(p.answer == "no" for p in self.probes),
            "by_split": by_split,
        }

    def image_shas(self) -> list[str]:
        return sorted({p.image for p in self.probes})

    def finish(self, manifest: dict[str, Any], *, lmms_eval: bool = True) -> dict[str, Any]:
        """Close the rows, write the lmms-eval task folder, hash the folder and write
        ``manifest.json``. ``manifest`` holds what only the manifest may hold (id, times, who,
        source datasets, the reviewed-image rule, seed, ``allow_seen``)."""
        self.close()
        task = None
        if lmms_eval:
            from training.probes.lmms_task import write_lmms_task

            # Named from the probes' content, so the task name says which questions it holds.
            task = write_lmms_task(self.root, str(manifest.get("id", self.root.name)))
        shas = self.image_shas()
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "lmms_eval_task": task,
            "counts": {**self.counts(), **manifest.get("counts", {})},
            "image_sha256s": shas,
            "image_list_sha256": image_list_sha256(shas),
        }
        return write_manifest(self.root, full)

    def __enter__(self) -> ProbeSetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProbeSet:
    """A probe-set folder, read back: ``ProbeSet.open(path)``; ``verify=True`` re-hashes it."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False) -> ProbeSet:
        root = Path(path)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise ProbeSetError(f"{root} is not a probe set: it has no manifest.json")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ProbeSetError(f"{root}: format is {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise ProbeSetError(
                f"{root}: format_version {manifest.get('format_version')!r} is not supported "
                f"(this reader knows {SUPPORTED_FORMAT_VERSIONS})"
            )
        if verify and content_sha256(root) != manifest.get("content_sha256"):
            raise ProbeSetError(f"{root}: content_sha256 does not match its files")
        return cls(root, manifest)

    @property
    def id(self) -> str:
        return str(self.manifest.get("id", self.root.name))

    def probes(self) -> Iterator[Probe]:
        with (self.root / "probes.jsonl").open(encoding="utf-8") as rows:
            for number, line in enumerate(rows, 1):
                if not line.strip():
                    continue
                try:
                    yield Probe.from_record(json.loads(line))
                except (json.JSONDecodeError, TypeError) as err:
                    raise ProbeSetError(f"probes.jsonl line {number}: {err}") from err

    def image_path(self, probe: Probe) -> Path:
        """Where the bytes of a probe's image are: ``images/`` or its reference-mode ``uri``."""
        if probe.uri is not None:
            return uri_path(probe.uri, self.root)
        folder = self.root / "images" / probe.image[:2]
        found = sorted(folder.glob(f"{probe.image}.*")) if folder.is_dir() else []
        if not found:
            raise ProbeSetError(f"probe {probe.id}: image {probe.image[:12]}... is not in {folder}")
        return found[0]

    def image_bytes(self, probe: Probe) -> bytes:
        return self.image_path(probe).read_bytes()
