"""Writer for a dataset version in the ``docs/formats.md`` layout, in constant memory.

The web application's exporter and ``training.data.synthetic`` both write through this module,
so there is one definition of what a version looks like on disk. It imports neither Django nor
torch: records come in one at a time and go straight to files.

Determinism (the same records give the same bytes, so the same ``content_sha256``):

- JSON is ``canonical_json``: sorted keys, no spaces, UTF-8; floats in Python's shortest
  round-trip form (``repr``), which is exact and the same on every machine.
- Tar members carry a fixed mtime (0), uid/gid 0, empty owner names and mode 0644, USTAR format.
- The Parquet index has a fixed schema and row-group size; pyarrow writes no timestamp.
- Nothing that varies between two cuts (ids of the cut, times, absolute paths of the cut) goes
  into any file but ``manifest.json``, which the hash leaves out.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from training.data.layout import FORMAT, write_manifest

FORMAT_VERSION = 1
DEFAULT_SHARD_BYTES = 1 << 30  # about 1 GB per shard (FORMATS.md)
DEFAULT_ROW_GROUP = 65_536


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one JSON serialisation of hashed files.

    >>> canonical_json({"b": 1.5, "a": [0.1, 2]})
    '{"a":[0.1,2],"b":1.5}'
    """
    return _ENCODER.encode(value)


# What ``_ENCODER`` uses for strings (ensure_ascii=False): the C escaper when there is one.
_STR = json.encoder.encode_basestring


def _number(value: Any) -> str:
    """A number exactly as ``canonical_json`` writes it (finite floats and ints fast)."""
    if type(value) is float and value - value == 0.0:  # finite: inf - inf and nan are nan
        return float.__repr__(value)
    if type(value) is int:
        return int.__repr__(value)
    return _ENCODER.encode(value)


def _value(value: Any) -> str:
    if type(value) is str:
        return _STR(value)
    if type(value) is float or type(value) is int:
        return _number(value)
    return _ENCODER.encode(value)


# Stage-1 region rows as the exporter reads them from the database, in this order.
REGION_ROW = ("id", "x0", "y0", "x1", "y1", "phrase", "caption", "origin", "score")


def region_from_row(row: tuple) -> dict[str, Any]:
    """The Stage-1 region record of a ``REGION_ROW`` tuple."""
    rid, x0, y0, x1, y1, phrase, caption, origin, score = row
    return {"id": rid, "box": [x0, y0, x1, y1], "caption": caption, "phrase": phrase,
            "origin": origin, "score": score}  # fmt: skip


def stage1_json(head: dict[str, Any], rows: list[tuple]) -> str:
    """``canonical_json`` of ``{**head, "regions": [region_from_row(r) for r in rows]}``, built
    directly: the export's hot path (about 1.5x faster than the generic encoder, byte for byte
    the same; ``tests/training/test_version_reader.py`` checks that).

    >>> head = {"image": "ab", "width": 4, "height": 3, "caption": 'a "cat"'}
    >>> rows = [(7, 0.0, 1.5, 2.0, 3.0, "cat", "a cat", "gt", None)]
    >>> stage1_json(head, rows) == canonical_json(
    ...     {**head, "regions": [region_from_row(r) for r in rows]})
    True

    Box coordinates and scores are finite numbers (the database's check constraints: boxes
    inside the image, scores in [0, 1]) and ids ints, so their ``repr`` is their JSON; the
    score may be None.
    """
    s = _STR
    regions = ",".join(
        [
            f'{{"box":[{x0!r},{y0!r},{x1!r},{y1!r}],"caption":{s(caption)},"id":{rid!r},'
            f'"origin":{s(origin)},"phrase":{s(phrase)},'
            f'"score":{"null" if score is None else repr(score)}}}'
            for rid, x0, y0, x1, y1, phrase, caption, origin, score in rows
        ]
    )
    fields = {**head, "regions": None}
    return (
        "{"
        + ",".join(
            f"{s(key)}:[{regions}]" if key == "regions" else f"{s(key)}:{_value(value)}"
            for key, value in sorted(fields.items())
        )
        + "}"
    )


def tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` as ``name`` with fixed metadata (no time, owner or umask leaks in)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _header_template() -> tuple[bytes, int]:
    """The fixed part of every member header, and its byte sum with the checksum field blank."""
    header = bytearray(512)
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[136:148] = b"00000000000\0"
    header[148:156] = b"        "
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    return bytes(header), sum(header)


_HEADER, _HEADER_SUM = _header_template()
_ZEROS = bytes(512)


def ustar_header(name: str, size: int) -> bytes:
    """A USTAR header with the same fixed metadata as ``tar_member`` (mode 0644, uid/gid 0,
    mtime 0, no owner names), built from a template: only the name, the size and the checksum
    change (``tarfile``'s own path costs ~100 µs a member).

    >>> import tarfile, io
    >>> data = ustar_header("a.json", 2) + b"{}" + bytes(510) + bytes(1024)
    >>> tarfile.open(fileobj=io.BytesIO(data)).getmembers()[0].size
    2
    """
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name {name!r} is longer than 100 bytes")
    size_field = b"%011o\0" % size
    checksum = _HEADER_SUM + sum(raw) + sum(size_field)
    return b"".join(
        (
            raw,
            _HEADER[len(raw) : 124],
            size_field,
            _HEADER[136:148],
            b"%06o\0 " % checksum,
            _HEADER[156:],
        )
    )


class ShardWriter:
    """``stage1/shard-NNNNNN.tar`` files of about ``max_bytes`` each, one sample per image;
    with ``max_samples``, also at most that many samples each (small test versions need
    several shards long before they reach a size worth splitting at)."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = DEFAULT_SHARD_BYTES,
        max_samples: int | None = None,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.shards = 0
        self.samples = 0
        self._file: IO[bytes] | None = None
        self._bytes = 0
        self._in_shard = 0

    def add(self, key: str, record: dict[str, Any], image: tuple[bytes, str] | None) -> None:
        """One sample: ``<key>.json`` and, unless in reference mode, ``<key>.<ext>``."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/'")
        self.add_encoded(key, canonical_json(record).encode(), image)

    def add_encoded(self, key: str, body: bytes, image: tuple[bytes, str] | None) -> None:
        """``add`` with the record already serialised (``stage1_json``)."""
        size = len(body) + (len(image[0]) if image else 0)
        full = self.max_samples is not None and self._in_shard >= self.max_samples
        if self._file is None or full or (self._bytes and self._bytes + size > self.max_bytes):
            self._open_next()
        self._member(f"{key}.json", body)
        if image is not None:
            data, ext = image
            self._member(f"{key}.{ext}", data)
        self._bytes += size
        self._in_shard += 1
        self.samples += 1

    def _member(self, name: str, data: bytes) -> None:
        assert self._file is not None
        padding = _ZEROS[: -len(data) % 512]
        # One write per member: the copy of a few KB costs less than two more calls.
        self._file.write(b"".join((ustar_header(name, len(data)), data, padding)))
        self._written += 512 + len(data) + len(padding)

    def _open_next(self) -> None:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"shard-{self.shards:06d}.tar"
        # A large buffer: one system call per megabyte rather than per few samples.
        self._file = path.open("wb", buffering=1 << 20)
        self._written = 0
        self.shards += 1
        self._bytes = 0
        self._in_shard = 0

    def close(self) -> None:
        """End the archive as ``tarfile`` does: two zero blocks, padded to 10240 bytes."""
        if self._file is not None:
            end = self._written + 1024
            self._file.write(bytes(1024 + (-end) % tarfile.RECORDSIZE))
            self._file.close()
            self._file = None


INDEX_COLUMNS = ("key", "image", "region", "box", "caption", "phrase", "origin", "score")


class IndexWriter:
    """``stage1/index.parquet``: one row per region, written in row groups (constant memory).

    Regions wait as ``REGION_ROW`` tuples; at each flush Arrow converts all of them at once
    into a struct array (in C++, about 2x cheaper than filling one Python list per column), and
    the key and image, which repeat for every region of an image, are kept once per image and
    expanded by Arrow (``take``).
    """

    def __init__(self, path: Path, *, row_group: int = DEFAULT_ROW_GROUP) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._np = np
        self._pa = pa
        self.schema = pa.schema(
            [
                ("key", pa.string()),
                ("image", pa.string()),
                ("region", pa.int64()),
                ("box", pa.list_(pa.float64())),
                ("caption", pa.string()),
                ("phrase", pa.string()),
                ("origin", pa.string()),
                ("score", pa.float64()),
            ]
        )
        # A waiting row as Arrow sees it: REGION_ROW's fields, coordinates and score as floats.
        text = {"id": pa.int64(), "phrase": pa.string(), "caption": pa.string(),
                "origin": pa.string()}  # fmt: skip
        self._row_type = pa.struct([(name, text.get(name, pa.float64())) for name in REGION_ROW])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.row_group = row_group
        self.rows = 0
        self._reset()

    def _reset(self) -> None:
        self._rows: list[tuple] = []
        self._keys: list[str] = []
        self._images: list[str] = []
        self._counts: list[int] = []

    def add(self, key: str, image: str, region: dict[str, Any]) -> None:
        self.add_many(key, image, [region])

    def add_many(self, key: str, image: str, regions: list[dict[str, Any]]) -> None:
        """All regions of one image, as region records."""
        rows = []
        for r in regions:
            x0, y0, x1, y1 = r["box"]
            rows.append(
                (r.get("id"), x0, y0, x1, y1, r.get("phrase", ""), r.get("caption", ""),
                 r.get("origin", ""), r.get("score"))
            )  # fmt: skip
        self.add_rows(key, image, rows)

    def add_rows(self, key: str, image: str, rows: list[tuple]) -> None:
        """All regions of one image as ``REGION_ROW`` tuples (the export's hot path)."""
        if not rows:
            return
        self._rows.extend(rows)
        self._keys.append(key)
        self._images.append(image)
        self._counts.append(len(rows))
        if len(self._rows) >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        np, pa = self._np, self._pa
        row = dict(zip(REGION_ROW, pa.array(self._rows, self._row_type).flatten(), strict=True))
        n = len(self._rows)
        # Boxes as one flat run of 4 floats per row under one list array: no per-row lists.
        flat = np.column_stack([row[c].to_numpy() for c in ("x0", "y0", "x1", "y1")]).ravel()
        offsets = pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32))
        # Row i of the table belongs to image repeats[i]: expand key and image per region.
        repeats = pa.array(np.repeat(np.arange(len(self._counts), dtype=np.int32), self._counts))
        columns = {
            **row,
            "key": pa.array(self._keys, pa.string()).take(repeats),
            "image": pa.array(self._images, pa.string()).take(repeats),
            "region": row["id"],
            "box": pa.ListArray.from_arrays(offsets, pa.array(flat)),
        }
        table = pa.Table.from_arrays([columns[c] for c in INDEX_COLUMNS], schema=self.schema)
        self._writer.write_table(table, row_group_size=self.row_group)
        self.rows += n
        self._reset()

    def close(self) -> None:
        self._flush()
        self._writer.close()


class JsonlWriter:
    """One canonical JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self._handle.write(canonical_json(row) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._handle.close()


class LlavaWriter:
    """``stage2/llava.json``: a JSON list written element by element (never held whole)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self._handle.write("[")
        self.rows = 0

    def add(self, conversation: dict[str, Any]) -> None:
        self._handle.write(("," if self.rows else "") + "\n" + canonical_json(conversation))
        self.rows += 1

    def close(self) -> None:
        self._handle.write("\n]\n" if self.rows else "]\n")
        self._handle.close()


class VersionWriter:
    """Writes one version folder; ``finish`` hashes it and writes ``manifest.json`` last.

    ``image`` is the key of every Stage-1 sample and of the held-out split; callers pass the
    image sha256, so the split and the keys do not depend on database ids.

        with VersionWriter(tmp, reference=True) as out:
            out.add_stage1(sha, record, None)
            out.rl_prompts.add({...})
            manifest = out.finish({"id": ..., ...})
    """

    def __init__(
        self,
        root: str | Path,
        *,
        reference: bool,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        shard_samples: int | None = None,
        row_group: int = DEFAULT_ROW_GROUP,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reference = reference
        self.shards = ShardWriter(
            self.root / "stage1", max_bytes=shard_bytes, max_samples=shard_samples
        )
        self.index = IndexWriter(self.root / "stage1" / "index.parquet", row_group=row_group)
        self.sft = JsonlWriter(self.root / "stage2" / "sft.jsonl")
        self.rm = JsonlWriter(self.root / "stage2" / "rm.jsonl")
        self.rl_prompts = JsonlWriter(self.root / "stage2" / "rl_prompts.jsonl")
        self.llava = LlavaWriter(self.root / "stage2" / "llava.json")
        self.eval_items = JsonlWriter(self.root / "eval" / "items.jsonl")
        self.regions = 0
        self.images_written = 0
        self._closed = False

    def add_stage1(self, key: str, record: dict[str, Any], image: tuple[bytes, str] | None) -> None:
        """One image's record; in embedded mode ``image`` is ``(bytes, ext)`` and the bytes also
        go to ``images/ab/<sha256>.<ext>``."""
        image = self._sample_image(key, record, image)
        self.shards.add(key, record, image)
        self.index.add_many(key, str(record["image"]), record["regions"])
        self.regions += len(record["regions"])

    def add_stage1_rows(
        self,
        key: str,
        head: dict[str, Any],
        rows: list[tuple],
        image: tuple[bytes, str] | None,
    ) -> None:
        """``add_stage1`` for a record given as its fields (``head``: image, width, height,
        caption, and ``uri`` in reference mode) and its regions as ``REGION_ROW`` tuples: the
        same bytes, written without building a dict per region."""
        if not rows:
            self.add_stage1(key, {**head, "regions": []}, image)
            return
        image = self._sample_image(key, head, image)
        self.shards.add_encoded(key, stage1_json(head, rows).encode(), image)
        self.index.add_rows(key, str(head["image"]), rows)
        self.regions += len(rows)

    def _sample_image(
        self, key: str, head: dict[str, Any], image: tuple[bytes, str] | None
    ) -> tuple[bytes, str] | None:
        """The image bytes that go into the shard with a sample: none in reference mode (the
        record's ``uri`` stands for them), else ``image``, which also goes to ``images/``."""
        if self.reference:
            if "uri" not in head:
                raise ValueError(f"sample {key!r}: reference mode needs a 'uri' in the record")
            return None
        if image is None:
            raise ValueError(f"sample {key!r}: embedded mode needs the image bytes")
        self.add_image(str(head["image"]), *image)
        return image

    def add_image(self, sha: str, data: bytes, ext: str) -> None:
        """``images/ab/<sha256>.<ext>`` (embedded mode), written once per image."""
        path = self.root / "images" / sha[:2] / f"{sha}.{ext}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.images_written += 1

    def has_image(self, sha: str) -> bool:
        """Whether the bytes of ``sha`` are already in ``images/`` (any extension)."""
        folder = self.root / "images" / sha[:2]
        return folder.is_dir() and any(folder.glob(f"{sha}.*"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.shards.close()
        self.index.close()
        for writer in (self.sft, self.rm, self.rl_prompts, self.llava, self.eval_items):
            writer.close()

    def counts(self) -> dict[str, int]:
        return {
            "stage1_images": self.shards.samples,
            "stage1_regions": self.regions,
            "stage1_shards": self.shards.shards,
            "sft": self.sft.rows,
            "rm": self.rm.rows,
            "rl_prompts": self.rl_prompts.rows,
            "llava": self.llava.rows,
            "eval_items": self.eval_items.rows,
        }

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Close every file, hash the folder and write ``manifest.json`` (the last file)."""
        self.close()
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "counts": {**self.counts(), **manifest.get("counts", {})},
        }
        return write_manifest(self.root, full)

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def folder_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
