"""Writes to regions. Every change goes through here so that history and versions stay whole.

A writer passes the ``version`` it read. The update is one conditional
``UPDATE ... WHERE id = %s AND version = %s`` whose row count says whether someone else changed
the region meanwhile; then ``RegionConflict`` carries the current state and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from training.geometry import BoxError, fit_box
from webapp.regions.models import Region, RegionChange

EDITABLE = frozenset({"box", "phrase", "caption", "status", "flagged", "flag_reason"})


@dataclass
class RegionConflict(Exception):
    """The region moved on since the writer read it; ``current`` is what it is now."""

    current: dict | None

    def __str__(self) -> str:
        if self.current is None:
            return "the region no longer exists"
        return f"the region is at version {self.current['version']}"


def _columns(changes: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(f"fields that cannot be edited: {', '.join(sorted(unknown))}")
    columns = {k: v for k, v in changes.items() if k != "box"}
    if "box" in changes:
        # Edits are exact: nothing is clipped silently, so the tolerance is zero.
        x0, y0, x1, y1 = fit_box(tuple(changes["box"]), width, height, tolerance=0).box
        columns.update(x0=x0, y0=y0, x1=x1, y1=y1)
    if "status" in columns and columns["status"] not in Region.Status.values:
        raise ValueError(f"unknown status {columns['status']!r}")
    return columns


def update_region(
    *,
    region_id: int,
    expected_version: int,
    changes: dict[str, Any],
    user=None,
    run=None,
) -> Region:
    """Apply ``changes`` if the region is still at ``expected_version``; record the change.

    Raises ``RegionConflict`` when the version moved (or the region is gone), ``BoxError`` or
    ``ValueError`` for a bad value. Nothing is written in either case.
    """
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(pk=region_id).first()
        if region is None:
            raise RegionConflict(current=None)
        if region.version != expected_version:
            raise RegionConflict(current=region.snapshot())
        before = region.snapshot()
        columns = _columns(changes, region.image_width, region.image_height)
        updated = Region.objects.filter(pk=region_id, version=expected_version).update(
            **columns, version=F("version") + 1, updated_by=user, updated_at=timezone.now()
        )
        if updated != 1:
            raise RegionConflict(current=Region.objects.get(pk=region_id).snapshot())
        region.refresh_from_db()
        RegionChange.objects.create(
            region=region,
            action=RegionChange.Action.UPDATE,
            version=region.version,
            user=user,
            run=run,
            before=before,
            after=region.snapshot(),
        )
    return region


def create_region(
    *, image, box, phrase: str = "", caption: str = "", user=None, run=None
) -> Region:
    """A region drawn by a person (origin human), recorded in history as a creation."""
    x0, y0, x1, y1 = fit_box(tuple(box), image.width, image.height, tolerance=0).box
    with transaction.atomic():
        region = Region.objects.create(
            image=image,
            image_width=image.width,
            image_height=image.height,
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            phrase=phrase,
            caption=caption,
            origin=Region.Origin.HUMAN,
            updated_by=user,
            run=run,
        )
        RegionChange.objects.create(
            region=region,
            action=RegionChange.Action.CREATE,
            version=region.version,
            user=user,
            run=run,
            after=region.snapshot(),
        )
    return region


def delete_region(*, region_id: int, expected_version: int, user=None) -> None:
    """Delete a human-drawn region; detector and ground-truth regions are rejected instead."""
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(pk=region_id).first()
        if region is None or region.version != expected_version:
            raise RegionConflict(current=region.snapshot() if region else None)
        if region.origin != Region.Origin.HUMAN:
            raise ValueError("only regions a person drew can be deleted; reject the others")
        RegionChange.objects.create(
            region=region,
            action=RegionChange.Action.DELETE,
            version=region.version,
            user=user,
            before=region.snapshot(),
        )
        region.delete()


__all__ = ["BoxError", "RegionConflict", "create_region", "delete_region", "update_region"]
