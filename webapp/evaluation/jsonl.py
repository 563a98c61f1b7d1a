"""Reading the JSONL files a curator uploads (items, responses), with errors naming the line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


class InputError(ValueError):
    """Bad input from a file or form; the message names the file, line or field."""


def read_rows(lines: Iterable[str | bytes], *, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; raises ``InputError`` naming the line."""
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{name} line {number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{name} line {number}: expected a JSON object")
        yield number, row


def text_field(row: dict[str, Any], names: tuple[str, ...], *, where: str) -> str:
    """The first of ``names`` present in ``row`` as a non-empty string."""
    for field in names:
        if field in row and row[field] is not None:
            value = row[field]
            if not isinstance(value, str) or not value.strip():
                raise InputError(f'{where}: "{field}" must be a non-empty string')
            return value
    raise InputError(f"{where}: missing {' or '.join(repr(n) for n in names)}")


def item_key(row: dict[str, Any], *, where: str) -> str:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise InputError(f'{where}: "id" must be a string or a whole number')
    return str(value)
