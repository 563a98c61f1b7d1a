"""Reading annotation files and their fields strictly, with errors that say where and why.

The readers accept what real files contain (integer ids or string ids, ``640`` or ``640.0``
for a width) and refuse what cannot be meant (``true`` as an id, ``"12"`` as a coordinate,
text holding NUL bytes, which PostgreSQL cannot store).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from webapp.core.importing.report import BadField, RecordError

# Ids end up inside source keys (``coco:ann:<id>``) that must fit their columns.
MAX_ID_LENGTH = 100


class FileProblem(Exception):
    """A file that cannot be read at all; carries the one error that says so."""

    def __init__(self, error: RecordError) -> None:
        super().__init__(str(error))
        self.error = error


def read_text(path: Path) -> str:
    """The file's text, strictly UTF-8 (a BOM is tolerated), or ``FileProblem``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileProblem(RecordError(str(path), "", "", "file not found")) from None
    except OSError as exc:
        raise FileProblem(RecordError(str(path), "", "", f"cannot read: {exc}")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not UTF-8 text: byte 0x{bad} at byte offset {exc.start} (line {line})"
        raise FileProblem(RecordError(str(path), "", "", reason)) from None


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names its line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise FileProblem(RecordError(str(path), "", "", reason)) from None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "a list" if isinstance(value, list) else "an object"
    )


def require(record: Any, key: str, *, prefix: str = "") -> Any:
    if not isinstance(record, dict):
        reason = f"expected an object, got {type_name(record)}"
        raise BadField(prefix.rstrip(".") or "(record)", reason)
    if key not in record:
        raise BadField(prefix + key, "missing")
    return record[key]


def get_list(record: Any, key: str, *, prefix: str = "") -> list:
    value = require(record, key, prefix=prefix)
    if not isinstance(value, list):
        raise BadField(prefix + key, f"expected a list, got {type_name(value)}")
    return value


def get_id(record: Any, key: str, *, prefix: str = "") -> int | str:
    """An identifier: an integer or a short non-empty string, used as an opaque key."""
    value = require(record, key, prefix=prefix)
    if type(value) is int:  # the common case, first: this runs once per annotation
        return value
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise BadField(prefix + key, f"expected an integer or string id, got {value!r}")
    if isinstance(value, str):
        check_text(value, prefix + key, max_length=MAX_ID_LENGTH)
    return value


def get_number(record: Any, key: str, *, prefix: str = "") -> float:
    """A number as JSON has it; NaN and infinities pass here and are refused by ``fit_box``."""
    return as_number(require(record, key, prefix=prefix), prefix + key)


def as_number(value: Any, name: str) -> float:
    if type(value) is float or type(value) is int:  # not bool, a subclass of int
        return float(value)
    raise BadField(name, f"expected a number, got {type_name(value)} {value!r}")


def as_size(value: Any, name: str) -> int:
    """A positive pixel size; ``640.0`` is accepted as 640, ``640.5`` is not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadField(name, f"expected a positive integer, got {type_name(value)} {value!r}")
    if not math.isfinite(value) or value != int(value) or value <= 0:
        raise BadField(name, f"expected a positive integer, got {value!r}")
    return int(value)


def get_size(record: Any, key: str) -> int | None:
    """An optional width or height: absent or null means "read it from the file"."""
    value = record.get(key) if isinstance(record, dict) else None
    return None if value is None else as_size(value, key)


def top_list(data: Any, key: str, file: str) -> list:
    """A list at the top of a JSON object (``images`` in a COCO file), or ``FileProblem``."""
    if not isinstance(data, dict):
        reason = f"expected a JSON object at the top level, got {type_name(data)}"
        raise FileProblem(RecordError(file, "", "", reason))
    try:
        return get_list(data, key)
    except BadField as exc:
        raise FileProblem(RecordError(file, "", exc.field, exc.reason)) from None


def check_text(value: str, name: str, *, max_length: int | None = None) -> str:
    if "\x00" in value:
        raise BadField(name, "contains a NUL character")
    if max_length is not None and len(value) > max_length:
        raise BadField(name, f"is {len(value)} characters long; at most {max_length} fit")
    return value


def get_text(
    record: Any, key: str, *, prefix: str = "", max_length: int | None = None, optional=False
) -> str:
    if optional and (not isinstance(record, dict) or record.get(key) is None):
        return ""
    value = require(record, key, prefix=prefix)
    if not isinstance(value, str):
        raise BadField(prefix + key, f"expected a string, got {type_name(value)} {value!r}")
    return check_text(value, prefix + key, max_length=max_length)
