"""Reader for a dataset version in the ``docs/formats.md`` layout.

``DatasetVersion.open(path)`` checks the manifest (format, format_version) and, unless told not
to, recomputes ``content_sha256`` exactly as FORMATS.md defines it. Stage-1 samples stream from
the WebDataset shards (plain tar: ``<key>.json`` plus ``<key>.jpg|png|webp`` grouped by key)
through ``Stage1Stream``, an ``IterableDataset`` split across DataLoader workers and DDP ranks
without duplicates. Stage-2 and evaluation files are read by simple iterators.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from training.data.layout import (  # noqa: F401  (re-exported: the reader's public names)
    FORMAT,
    SUPPORTED_FORMAT_VERSIONS,
    content_sha256,
    file_sha256,
    key_in_holdout,
    uri_path,
)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
STAGE2_FILES = ("sft", "rm", "rl_prompts")


class DatasetVersionError(ValueError):
    """A dataset version that cannot be read; the message names the file at fault."""


@dataclass
class Stage1Record:
    """One image of a Stage-1 shard: its JSON record plus the image bytes (or a ``uri``)."""

    key: str
    record: dict[str, Any]
    image_bytes: bytes | None
    shard: str

    @property
    def uri(self) -> str | None:
        uri = self.record.get("uri")
        return str(uri) if uri is not None else None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetVersionError(f"{path}: line {number} is not JSON: {err}") from err
            if not isinstance(row, dict):
                raise DatasetVersionError(f"{path}: line {number} is not a JSON object")
            yield row


def iter_shard(path: Path) -> Iterator[Stage1Record]:
    """Records of one tar shard, grouped by key in file order (WebDataset convention: the key
    is the member name up to its first dot)."""
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as err:
        raise DatasetVersionError(f"{path}: not a readable tar shard: {err}") from err
    with tar:
        key: str | None = None
        parts: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            stem, _, ext = name.partition(".")
            if stem != key:
                if key is not None:
                    yield _record(path, key, parts)
                key, parts = stem, {}
            handle = tar.extractfile(member)
            assert handle is not None
            parts[ext.lower()] = handle.read()
        if key is not None:
            yield _record(path, key, parts)


def _record(shard: Path, key: str, parts: dict[str, bytes]) -> Stage1Record:
    if "json" not in parts:
        raise DatasetVersionError(f"{shard}: sample {key!r} has no {key}.json member")
    try:
        record = json.loads(parts["json"])
    except json.JSONDecodeError as err:
        raise DatasetVersionError(f"{shard}: {key}.json is not JSON: {err}") from err
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    if image is None and "uri" not in record:
        raise DatasetVersionError(
            f'{shard}: sample {key!r} has neither image bytes nor a "uri" (reference mode)'
        )
    return Stage1Record(key=key, record=record, image_bytes=image, shard=shard.name)


@dataclass
class DatasetVersion:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path, *, verify: bool = True) -> DatasetVersion:
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise DatasetVersionError(f"{manifest_path}: missing; not a dataset version")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetVersionError(f"{manifest_path}: not JSON: {err}") from err
        if manifest.get("format") != FORMAT:
            raise DatasetVersionError(
                f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}"
            )
        if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise DatasetVersionError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
                f"one this reader knows ({', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
            )
        if verify:
            expected = manifest.get("content_sha256")
            actual = content_sha256(root)
            if expected != actual:
                raise DatasetVersionError(
                    f"{manifest_path}: content_sha256 is {expected!r} but the files hash to "
                    f"{actual!r}; the version was changed or copied incompletely"
                )
        return cls(root=root, manifest=manifest)

    @property
    def id(self) -> str:
        return str(self.manifest.get("id", self.root.name))

    @property
    def reference_mode(self) -> bool:
        return not (self.root / "images").is_dir()

    def shards(self) -> list[Path]:
        return sorted((self.root / "stage1").glob("shard-*.tar"))

    def image_path(self, sha256: str, ext: str) -> Path:
        return self.root / "images" / sha256[:2] / f"{sha256}.{ext}"

    def image_file(self, record: Mapping[str, Any], *, where: str = "record") -> Path:
        """The local file of the image any record names (Stage-1, SFT, RM, RL prompt, LLaVA,
        evaluation): ``images/`` by its ``image`` sha256 (embedded mode), else its ``uri``
        when that is a local path or ``file://`` URI (reference mode; relative paths are
        under the version). ``where`` names the record in errors."""
        sha = str(record.get("image") or "")
        if sha:
            for ext in IMAGE_EXTENSIONS:
                path = self.image_path(sha, ext)
                if path.is_file():
                    return path
        uri = record.get("uri")
        if uri:
            local = uri_path(str(uri), self.root)
            if local.is_file():
                return local
            raise DatasetVersionError(
                f"{where} refers to {str(uri)!r}, which is not a readable local file; fetch "
                "remote references before training"
            )
        raise DatasetVersionError(f"{where} has no image (no images/ file for {sha!r}, no uri)")

    def stage1_records(self) -> Iterator[Stage1Record]:
        for shard in self.shards():
            yield from iter_shard(shard)

    def count_stage1_images(self) -> int:
        """Samples across all shards, from the tar headers (no image bytes are read)."""
        total = 0
        for shard in self.shards():
            with tarfile.open(shard, mode="r:") as tar:
                total += sum(1 for m in tar if m.isfile() and m.name.endswith(".json"))
        return total

    def stage2(self, name: str) -> Iterator[dict[str, Any]]:
        """Rows of ``stage2/<name>.jsonl``, name one of ``sft``, ``rm``, ``rl_prompts``."""
        if name not in STAGE2_FILES:
            raise ValueError(f"unknown stage2 file {name!r}; one of {', '.join(STAGE2_FILES)}")
        path = self.root / "stage2" / f"{name}.jsonl"
        if not path.is_file():
            raise DatasetVersionError(f"{path}: missing")
        return read_jsonl(path)

    def image_bytes(self, record: dict[str, Any]) -> bytes:
        """The image bytes of a Stage-2 or evaluation row (see ``record_image_bytes``)."""
        return record_image_bytes(self, record, where=f"{self.root}: row {record.get('id')!r}")

    def llava_conversations(self) -> list[dict[str, Any]]:
        path = self.root / "stage2" / "llava.json"
        if not path.is_file():
            raise DatasetVersionError(f"{path}: missing")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise DatasetVersionError(f"{path}: expected a JSON list of conversations")
        return data

    def eval_items(self) -> Iterator[dict[str, Any]]:
        path = self.root / "eval" / "items.jsonl"
        if not path.is_file():
            raise DatasetVersionError(f"{path}: missing")
        return read_jsonl(path)


def consumer_slice(n_shards: int, consumer: int, consumers: int) -> tuple[list[int], int, int]:
    """Which shards one consumer (rank x worker) reads, and which samples of them.

    Returns ``(shard indices, sample stride, sample offset)``: with at least as many shards as
    consumers each consumer takes whole shards (stride 1); with fewer, the consumers sharing a
    shard take every ``stride``-th sample of it. No sample goes to two consumers.

    >>> consumer_slice(4, 1, 2)
    ([1, 3], 1, 0)
    >>> [consumer_slice(2, c, 5) for c in range(5)]
    [([0], 3, 0), ([1], 2, 0), ([0], 3, 1), ([1], 2, 1), ([0], 3, 2)]
    """
    if n_shards >= consumers:
        return list(range(consumer, n_shards, consumers)), 1, 0
    shard = consumer % n_shards
    sharing = len(range(shard, consumers, n_shards))
    return [shard], sharing, consumer // n_shards


@dataclass
class Stage1Stream(IterableDataset):  # type: ignore[type-arg]
    """Endless stream of Stage-1 batches for one DDP rank, shuffled per pass.

    Each pass over the data visits this consumer's slice of the shards in an order drawn from
    ``(seed, pass)``, through a shuffle buffer. Samples are grouped into lists of
    ``batch_size`` and handed to ``make_batch`` (decoding happens there, so the
    ``skip_batches`` used to resume a run read the skipped samples but never decode them).
    Use with ``DataLoader(stream, batch_size=None)``; the loader takes batches from its workers
    round-robin, which is what makes the per-worker skip exact.
    """

    version: DatasetVersion
    batch_size: int
    make_batch: Callable[[list[Stage1Record]], Any]
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    shuffle_buffer: int = 256
    holdout_fraction: float = 0.0
    holdout: bool = False  # True: yield only the held-out images (evaluation)
    skip_batches: int = 0
    endless: bool = True
    _shards: list[Path] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._shards = self.version.shards()
        if not self._shards:
            raise DatasetVersionError(f"{self.version.root / 'stage1'}: no shard-*.tar files")

    def records(self, worker: int, workers: int, pass_index: int) -> Iterator[Stage1Record]:
        consumers = self.world_size * workers
        consumer = self.rank * workers + worker
        shard_ids, stride, offset = consumer_slice(len(self._shards), consumer, consumers)
        rng = random.Random(hash((self.seed, pass_index, consumer)))
        rng.shuffle(shard_ids)
        buffer: list[Stage1Record] = []
        for shard_id in shard_ids:
            for n, rec in enumerate(iter_shard(self._shards[shard_id])):
                if n % stride != offset:
                    continue
                if key_in_holdout(rec.key, self.holdout_fraction) != self.holdout:
                    continue
                if self.shuffle_buffer <= 1:
                    yield rec
                    continue
                buffer.append(rec)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Batches k with k % workers == worker come from this worker (DataLoader round-robin).
        skip = len(range(worker, self.skip_batches, workers))
        pass_index = 0
        batch: list[Stage1Record] = []
        while True:
            produced = False
            for rec in self.records(worker, workers, pass_index):
                produced = True
                batch.append(rec)
                if len(batch) == self.batch_size:
                    if skip > 0:
                        skip -= 1
                    else:
                        yield self.make_batch(batch)
                    batch = []
            pass_index += 1
            if not self.endless:
                if batch:
                    yield self.make_batch(batch)
                return
            if not produced:
                raise DatasetVersionError(
                    f"{self.version.root}: rank {self.rank} worker {worker} has no samples "
                    "(more consumers than images, or every image held out)"
                )


def load_image_bytes(version: DatasetVersion, rec: Stage1Record) -> bytes:
    """The image bytes of a record: inline from the shard, else from ``images/`` by sha256, else
    from ``uri`` when it is a local path or ``file://`` URI (reference mode)."""
    if rec.image_bytes is not None:
        return rec.image_bytes
    return record_image_bytes(version, rec.record, where=f"{rec.shard}: sample {rec.key!r}")


def record_image_bytes(
    version: DatasetVersion, record: Mapping[str, Any], *, where: str = "record"
) -> bytes:
    """The image bytes of any record that names one (``DatasetVersion.image_file``)."""
    return version.image_file(record, where=where).read_bytes()


def open_image(data: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    return image.convert("RGB")
