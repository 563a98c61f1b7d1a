"""Image-caption pairs (LAION style) from JSONL, CSV or Parquet; the extension decides.

The image column is the first of ``image``, ``path``, ``file``, ``file_name``, ``url``, ``URL``
that the file has; the caption column the first of ``caption``, ``text``, ``TEXT``. Paths are
relative to the images folder. Rows naming the same image add captions to it (an identical
caption once). This creates images only, no regions.

URLs are refused with an error for the row rather than downloaded: fetching millions of
remote files inside an import (or an API request) is a job for a downloader that handles
retries, rate limits and dead links, such as img2dataset, whose output gives local paths.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from webapp.catalog.importing.images import URL_REFUSED
from webapp.catalog.importing.pipeline import run_import
from webapp.catalog.importing.plan import ImageSpec, Plan
from webapp.core.importing.fields import FileProblem, check_text, read_text, type_name
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import BadField, ImportReport, RecordError

IMAGE_COLUMNS = ("image", "path", "file", "file_name", "url", "URL")
CAPTION_COLUMNS = ("caption", "text", "TEXT")
JSONL = (".jsonl", ".ndjson")
CSV = (".csv", ".tsv")
PARQUET = (".parquet",)


def import_captions(
    *,
    dataset: str,
    file: Path,
    images: Path,
    on_error: str = "abort",
    user: Any = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import image-caption pairs from ``file`` with images under ``images``."""
    return run_import(
        format="captions",
        dataset=dataset,
        images=images,
        on_error=on_error,
        user=user,
        progress=progress,
        parameters={"file": str(file), "images": str(images)},
        parse=lambda: parse_captions(Path(file)),
    )


def _pick(columns: Any, choices: tuple[str, ...]) -> str | None:
    return next((name for name in choices if name in columns), None)


def _file_error(file: Path, reason: str, field: str = "") -> FileProblem:
    return FileProblem(RecordError(str(file), "", field, reason))


def _columns(file: Path, names: Any) -> tuple[str, str]:
    image, caption = _pick(names, IMAGE_COLUMNS), _pick(names, CAPTION_COLUMNS)
    if image is None:
        raise _file_error(file, f"no image column; expected one of {', '.join(IMAGE_COLUMNS)}")
    if caption is None:
        raise _file_error(file, f"no caption column; expected one of {', '.join(CAPTION_COLUMNS)}")
    return image, caption


def _jsonl_rows(file: Path) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON at column {exc.colno}: {exc.msg}"
            yield f"line {number}", BadField("(line)", reason)


def _csv_rows(file: Path) -> Iterator[tuple[str, Any]]:
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(read_text(file), newline=""), delimiter=delimiter)
    try:
        _columns(file, reader.fieldnames or [])
        for row in reader:
            yield f"line {reader.line_num}", row
    except csv.Error as exc:
        raise _file_error(file, f"invalid CSV at line {reader.line_num}: {exc}") from None


def _parquet_rows(file: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # only this format needs it

    try:
        names = pq.read_schema(file).names
        image, caption = _columns(file, names)
        table = pq.read_table(file, columns=[image, caption])
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _file_error(file, f"not a readable Parquet file: {exc}") from None
    paths, texts = table.column(image).to_pylist(), table.column(caption).to_pylist()
    for i, (path, text) in enumerate(zip(paths, texts, strict=True)):
        yield f"row {i}", {image: path, caption: text}


def _rows(file: Path) -> Iterator[tuple[str, Any]]:
    suffix = file.suffix.lower()
    if suffix in JSONL:
        return _jsonl_rows(file)
    if suffix in CSV:
        return _csv_rows(file)
    if suffix in PARQUET:
        return _parquet_rows(file)
    known = ", ".join(JSONL + CSV + PARQUET)
    raise _file_error(file, f"unknown file type {suffix or '(none)'!r}; expected one of {known}")


def _text(row: Any, choices: tuple[str, ...], kind: str) -> tuple[str, str]:
    if not isinstance(row, dict):
        raise BadField("(row)", f"expected an object, got {type_name(row)}")
    column = _pick(row, choices)
    if column is None:
        raise BadField(kind, f"missing; expected one of {', '.join(choices)}")
    value = row[column]
    if not isinstance(value, str):
        raise BadField(column, f"expected a string, got {type_name(value)} {value!r}")
    value = check_text(value.strip(), column, max_length=512 if kind == "image" else None)
    if not value:
        raise BadField(column, "is empty")
    return column, value


def parse_captions(file: Path) -> Plan:
    if not file.is_file():
        raise _file_error(file, "file not found")
    plan = Plan("captions")
    name = str(file)
    for where, row in _rows(file):
        try:
            if isinstance(row, BadField):
                raise row
            column, path = _text(row, IMAGE_COLUMNS, "image")
            if "://" in path:
                raise BadField(column, f"{path!r} is a URL; {URL_REFUSED}")
            _, caption = _text(row, CAPTION_COLUMNS, "caption")
        except BadField as exc:
            plan.error(name, where, exc)
            continue
        key = os.path.normpath(path)
        spec = plan.images.get(key)
        if spec is None:
            spec = plan.images[key] = ImageSpec(
                key=key,
                paths=(path,),
                file=name,
                where=where,
                path_field=column,
                source="captions",
                file_name=path,
                uri=path,
            )
        if caption not in spec.captions:
            spec.captions.append(caption)
    return plan
