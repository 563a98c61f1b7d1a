"""Optimistic concurrency, shared by everything people edit (regions, trajectories, ratings).

An editable row carries a ``version`` that grows with every change. A writer sends the version
it read; the write is one conditional ``UPDATE ... WHERE id = %s AND version = %s`` under a row
lock, and a stale version raises ``Conflict`` carrying the current state, with nothing written.
The caller records the change in its history table through ``record``, in the same
transaction, so a change and its history row commit together or not at all.

Over HTTP the version travels as an ``If-Match`` header (an ETag ``"<version>"``) or a
``version`` field; a stale one is answered 409 with the current state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

M = TypeVar("M", bound=models.Model)


@dataclass
class Conflict(Exception):
    """The row moved on since the writer read it; ``current`` is what it is now (None: gone)."""

    current: dict | None

    def __str__(self) -> str:
        if self.current is None:
            return "it no longer exists"
        return f"it is at version {self.current['version']}"


def versioned_update(
    model: type[M],
    *,
    pk: int,
    expected_version: int,
    snapshot: Callable[[M], dict],
    columns: Callable[[M], Mapping[str, Any]] | Mapping[str, Any],
    record: Callable[[M, dict, dict], Any],
    user=None,
    user_field: str | None = "updated_by",
    conflict: type[Conflict] = Conflict,
) -> M:
    """Write ``columns`` to row ``pk`` if it is still at ``expected_version``.

    ``columns`` may be a function of the locked row (to validate against it, e.g. a box against
    its image's size); it raises ``ValueError`` for bad input. ``record(row, before, after)``
    writes the history row. ``conflict`` is the ``Conflict`` subclass to raise. Returns the row
    as it is after the change.
    """
    with transaction.atomic():
        row = model._default_manager.select_for_update().filter(pk=pk).first()
        if row is None:
            raise conflict(current=None)
        if row.version != expected_version:  # type: ignore[attr-defined]
            raise conflict(current=snapshot(row))
        before = snapshot(row)
        values = dict(columns(row) if callable(columns) else columns)
        if user_field:
            values[user_field] = user
        if any(f.name == "updated_at" for f in model._meta.fields):
            values["updated_at"] = timezone.now()
        updated = model._default_manager.filter(pk=pk, version=expected_version).update(
            **values, version=F("version") + 1
        )
        if updated != 1:  # unreachable under the row lock; kept as the rule's last guard
            raise conflict(current=snapshot(model._default_manager.get(pk=pk)))
        row.refresh_from_db()
        record(row, before, snapshot(row))
    return row


def etag(version: int) -> str:
    return f'"{version}"'


def read_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header names (``"3"``, ``W/"3"`` or ``3``), None if absent.

    Raises ``ValueError`` for a header that is present but not a version.

    >>> read_if_match('W/"7"'), read_if_match(""), read_if_match(None)
    (7, None, None)
    """
    value = (header or "").strip().removeprefix("W/").strip('"')
    if not value:
        return None
    number = int(value)
    if number < 1:
        raise ValueError("a version is 1 or more")
    return number
