"""Writes to regions. Every change goes through here so that history and versions stay whole.

A writer passes the ``version`` it read. The update is one conditional
``UPDATE ... WHERE id = %s AND version = %s`` whose row count says whether someone else changed
the region meanwhile; then ``RegionConflict`` carries the current state and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from training.geometry import BoxError, fit_box
from webapp.core import leases
from webapp.core.versioning import Conflict, versioned_update
from webapp.regions.lint import LintRegion, lint_regions
from webapp.regions.models import Lease, Region, RegionChange
from webapp.regions.queue import QueueFilters, candidate_images

EDITABLE = frozenset({"box", "phrase", "caption", "status", "flagged", "flag_reason"})


class RegionConflict(Conflict):
    """The region moved on since the writer read it; ``current`` is what it is now."""

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

    def record(region: Region, before: dict, after: dict) -> None:
        RegionChange.objects.create(
            region=region,
            action=RegionChange.Action.UPDATE,
            version=region.version,
            user=user,
            run=run,
            before=before,
            after=after,
        )

    return versioned_update(
        Region,
        pk=region_id,
        expected_version=expected_version,
        snapshot=Region.snapshot,
        columns=lambda region: _columns(changes, region.image_width, region.image_height),
        record=record,
        user=user,
        conflict=RegionConflict,
    )


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


# --- Review: accept all, undo and restore -------------------------------------------------------

# The fields of a snapshot that a restore writes back (score, origin and version are facts).
RESTORABLE = ("box", "phrase", "caption", "status", "flagged")


def accept_remaining(*, image_id: int, user=None) -> list[RegionChange]:
    """Accept every pending region of an image at once, one history row per region.

    The pending rows are locked, changed with one ``UPDATE`` and recorded with one bulk
    insert, so the cost does not grow in queries with the number of regions.
    """
    with transaction.atomic():
        pending = list(
            Region.objects.select_for_update()
            .filter(image_id=image_id, status=Region.Status.PENDING)
            .order_by("pk")
        )
        if not pending:
            return []
        ids = [r.pk for r in pending]
        now = timezone.now()
        Region.objects.filter(pk__in=ids).update(
            status=Region.Status.ACCEPTED, version=F("version") + 1, updated_by=user, updated_at=now
        )
        changes = []
        for region in pending:
            before = region.snapshot()
            region.status = Region.Status.ACCEPTED
            region.version += 1
            changes.append(
                RegionChange(
                    region_id=region.pk,
                    action=RegionChange.Action.UPDATE,
                    version=region.version,
                    user=user,
                    before=before,
                    after=region.snapshot(),
                )
            )
        return RegionChange.objects.bulk_create(changes)


def _restorable(snapshot: dict) -> dict[str, Any]:
    return {k: snapshot[k] for k in RESTORABLE if k in snapshot}


def revert_change(
    *, change_id: int, user=None, image=None
) -> tuple[Region | None, RegionChange | None]:
    """Undo one change as a new change: the region goes back to the change's ``before``.

    Only while the region is still at the version that change made (else ``RegionConflict``:
    someone changed it since, and undoing would overwrite them). Undoing a creation deletes
    the drawn region; undoing a deletion draws it again (with a new id). Returns the region
    (None when deleted) and the change recorded.
    """
    change = RegionChange.objects.get(pk=change_id)
    if change.action == RegionChange.Action.CREATE:
        delete_region(region_id=change.region_id, expected_version=change.version, user=user)
        return None, RegionChange.objects.filter(region_id=change.region_id).last()
    if change.action == RegionChange.Action.DELETE:
        if image is None:
            raise ValueError("undoing a deletion needs the image to draw the region on again")
        before = change.before or {}
        region = create_region(
            image=image,
            box=before["box"],
            phrase=before.get("phrase", ""),
            caption=before.get("caption", ""),
            user=user,
        )
        return region, region.changes.last()
    region = update_region(
        region_id=change.region_id,
        expected_version=change.version,
        changes=_restorable(change.before or {}),
        user=user,
    )
    return region, region.changes.last()


def restore_version(
    *, change_id: int, expected_version: int, user=None
) -> tuple[Region, RegionChange]:
    """Bring a region back to the state right after an earlier change, as a new version."""
    change = RegionChange.objects.get(pk=change_id)
    if change.after is None:
        raise ValueError("that change deleted the region; there is no state to restore")
    region = update_region(
        region_id=change.region_id,
        expected_version=expected_version,
        changes=_restorable(change.after),
        user=user,
    )
    return region, region.changes.last()


# --- Consistency checks -------------------------------------------------------------------------


def apply_lint(*, image_id: int) -> dict[int, str]:
    """Run the consistency checks on an image's regions and store the flags that changed.

    Flags are derived from the regions' own data, so writing them neither bumps the version
    (an annotator's open edit stays valid) nor adds history. Returns the reason by region id.
    """
    regions = list(
        Region.objects.filter(image_id=image_id).only(
            "x0", "y0", "x1", "y1", "phrase", "caption", "flagged", "flag_reason",
            "image_width", "image_height",
        )
    )  # fmt: skip
    if not regions:
        return {}
    width, height = regions[0].image_width, regions[0].image_height
    found = lint_regions(
        [LintRegion(r.pk, tuple(r.box), r.phrase, r.caption) for r in regions], width, height
    )
    reasons = {pk: "; ".join(problems)[:64] for pk, problems in found.items()}
    # One UPDATE per distinct reason among the regions whose flag changed (usually none).
    changed: dict[str, list[int]] = {}
    for region in regions:
        reason = reasons[region.pk]
        if (region.flagged, region.flag_reason) != (bool(reason), reason):
            changed.setdefault(reason, []).append(region.pk)
    for reason, ids in changed.items():
        Region.objects.filter(pk__in=ids).update(flagged=bool(reason), flag_reason=reason)
    return reasons


# --- Leases (the shared machinery of webapp.core.leases) -----------------------------------------

CLAIM_BATCH = leases.CLAIM_BATCH


def claim_next_image(
    *, dataset_id: int, user, filters: QueueFilters | None = None, exclude: Iterable[int] = ()
) -> int | None:
    """Lease the next image with pending regions to ``user`` and return its id (or None).

    The user's other leases in the dataset are given back: an annotator holds one image at a
    time. ``exclude`` leaves out images (the one being skipped).
    """
    filters = filters or QueueFilters()

    def candidates(now, excluded: set[int]) -> list[int]:
        return candidate_images(
            dataset_id, filters, user_id=user.pk, now=now, exclude=excluded, limit=CLAIM_BATCH
        )

    return leases.claim_next(
        Lease,
        key_field="image_id",
        candidates=candidates,
        user=user,
        scope={"dataset_id": dataset_id},
        exclude=exclude,
    )


def renew_lease(*, image_id: int, user) -> bool:
    """Extend the user's live lease on the image (each saved action does); False if not theirs."""
    return leases.renew(Lease, key={"image_id": image_id}, user=user)


def release_lease(*, image_id: int, user) -> bool:
    """Give the image back to the pool (only the holder can)."""
    return leases.release(Lease, key={"image_id": image_id}, user=user)


__all__ = [
    "BoxError",
    "RegionConflict",
    "accept_remaining",
    "apply_lint",
    "claim_next_image",
    "create_region",
    "delete_region",
    "release_lease",
    "renew_lease",
    "restore_version",
    "revert_change",
    "update_region",
]
