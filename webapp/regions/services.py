"""Writes to regions. Every change goes through here so that history and versions stay whole.

A writer passes the ``version`` it read. The update is one conditional
``UPDATE ... WHERE id = %s AND version = %s`` whose row count says whether someone else changed
the region meanwhile; then ``RegionConflict`` carries the current state and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from training.geometry import BoxError, fit_box
from webapp.core import leases
from webapp.core.versioning import Conflict, versioned_update
from webapp.regions.lint import LintRegion, lint_regions, may_affect
from webapp.regions.models import Lease, Region, RegionChange, UndoStep
from webapp.regions.queue import QueueFilters, candidate_images
from webapp.regions.review_marks import revert_mark

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
        # Kept on the region so callers need no query to find the change they made.
        region.last_change = RegionChange.objects.create(
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


# What an undo checks is unchanged since; ``flagged`` is derived (the checks rewrite it without
# a version), so it cannot tell whether a person changed the region.
UNDO_COMPARED = ("box", "phrase", "caption", "status")


def _compared(snapshot: dict) -> dict[str, Any]:
    out = {k: snapshot.get(k) for k in UNDO_COMPARED}
    out["box"] = [float(v) for v in out["box"] or []]
    return out


def revert_change(
    *, change_id: int, user=None, image=None
) -> tuple[Region | None, RegionChange | None]:
    """Undo one change as a new change: the region goes back to the change's ``before``.

    Only while the region is still as that change left it (else ``RegionConflict``: someone
    changed it since, and undoing would overwrite them). "As it left it" compares the content
    (``UNDO_COMPARED``), not the version, so that undoing a later step first (which writes new
    versions) does not block undoing this one: that is what makes Ctrl+Z a stack. The write
    itself still carries the version read, so a change landing in between is a conflict too.
    Undoing a creation deletes the drawn region; undoing a deletion draws it again (with a new
    id). Returns the region (None when deleted) and the change recorded.
    """
    change = RegionChange.objects.get(pk=change_id)
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
    current = Region.objects.filter(pk=change.region_id).first()
    if current is None or _compared(current.snapshot()) != _compared(change.after or {}):
        raise RegionConflict(current=current.snapshot() if current else None)
    if change.action == RegionChange.Action.CREATE:
        delete_region(region_id=current.pk, expected_version=current.version, user=user)
        return None, RegionChange.objects.filter(region_id=change.region_id).last()
    region = update_region(
        region_id=change.region_id,
        expected_version=current.version,
        changes=_restorable(change.before or {}),
        user=user,
    )
    return region, region.last_change


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


# --- The undo stack (Ctrl+Z), kept per person and image so it survives a reload ------------------


@dataclass
class Reverted:
    """What undoing some changes did: regions changed back, drawn again or removed."""

    regions: list[Region] = field(default_factory=list)
    added: list[Region] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    made: list[int] = field(default_factory=list)
    # The region someone changed since, which stopped the undo there, and its state now.
    conflict: tuple[int, RegionConflict] | None = None
    # The step was there but could not be undone at all (say, a deletion without an image).
    error: str = ""
    # No open step was left to undo.
    nothing: bool = False
    # The step's exhaustive-review mark of the image was put back (``review_marks``).
    mark_reverted: bool = False


def record_undo_step(*, user, image_id: int, change_ids: Iterable[int]) -> UndoStep | None:
    """Push one action's history rows onto the user's undo stack for the image."""
    ids = sorted(set(change_ids))
    if not ids or user is None or not user.is_authenticated:
        return None
    return UndoStep.objects.create(user=user, image_id=image_id, changes=ids)


def revert_changes(*, change_ids: Iterable[int], user, image) -> Reverted:
    """Undo changes newest first, each as a new version in its own transaction.

    One transaction per region on purpose: a single one would hold the first region's queue
    lock (see ``QueueEntry``) while waiting for the next region's row lock, which a concurrent
    writer of that region may hold while it waits for the queue lock: a deadlock. Stops at the
    first region someone changed since (``conflict``), leaving the ones before it undone.
    """
    out = Reverted()
    for change_id in sorted(set(change_ids), reverse=True):
        try:
            region, change = revert_change(change_id=change_id, user=user, image=image)
        except RegionConflict as conflict:
            region_id = RegionChange.objects.only("region_id").get(pk=change_id).region_id
            out.conflict = (region_id, conflict)
            return out
        except ValueError as error:
            out.error = str(error)
            return out
        if region is None:
            out.removed.append(RegionChange.objects.only("region_id").get(pk=change_id).region_id)
        elif change is not None and change.action == RegionChange.Action.CREATE:
            out.added.append(region)
        else:
            out.regions.append(region)
        if change is not None:
            out.made.append(change.pk)
    return out


def undo_last_step(*, user, image) -> Reverted:
    """Undo the user's newest open step on the image (Ctrl+Z) and close it.

    The step is claimed with one conditional ``UPDATE`` whose row count says whether this
    request won it, so two tabs pressing Ctrl+Z at once undo two steps, not one step twice. A
    step that meets someone else's newer change is closed as superseded: Ctrl+Z then moves on.
    A step that set or cleared the image's exhaustive-review mark puts the earlier mark back
    (``review_marks.revert_mark``); a mark someone changed since supersedes it the same way.
    """
    while True:
        step = (
            UndoStep.objects.filter(user=user, image=image, closed_at__isnull=True)
            .order_by("-pk")
            .only("pk", "changes", "review_mark")
            .first()
        )
        if step is None:
            return Reverted(nothing=True)
        claimed = UndoStep.objects.filter(pk=step.pk, closed_at__isnull=True).update(
            closed_at=timezone.now(), outcome=UndoStep.Outcome.UNDONE
        )
        if claimed:
            break
    out = revert_changes(change_ids=step.changes, user=user, image=image)
    if step.review_mark and not (out.conflict or out.error):
        out.mark_reverted = revert_mark(image_id=image.pk, review_mark=step.review_mark)
        if not out.mark_reverted:
            out.error = "the image's review mark was changed by someone since"
    if out.conflict or out.error:
        UndoStep.objects.filter(pk=step.pk).update(outcome=UndoStep.Outcome.SUPERSEDED)
    return out


def close_undo_steps(*, user, image_id: int, change_ids: Iterable[int]) -> int:
    """Close the open step made of exactly these changes (undone by id, not by Ctrl+Z)."""
    return UndoStep.objects.filter(
        user=user, image_id=image_id, closed_at__isnull=True, changes=sorted(set(change_ids))
    ).update(closed_at=timezone.now(), outcome=UndoStep.Outcome.UNDONE)


# --- Consistency checks -------------------------------------------------------------------------


def apply_lint(
    *, image_id: int, region_ids: Iterable[int] | None = None, changed: Iterable[str] = ()
) -> dict[int, str]:
    """Run the consistency checks on an image's regions and store the flags that changed.

    Without ``region_ids`` every region is checked. With them (the regions a save just
    changed, and ``changed`` the fields it wrote), only the regions whose reasons can move
    are: the changed ones alone for a caption rewrite; for a phrase or box change also those
    that share a phrase with them or name it in their caption (``lint.may_affect``), and those
    flagged now (their flag may be the one going away). Flags are derived from the regions' own
    data, so writing them neither bumps the version (an annotator's open edit stays valid) nor
    adds history. Returns the reason of each region checked, by id.
    """
    # Plain tuples, not model instances: a save reads every region of its image, and building
    # hundreds of instances cost more than the checks themselves.
    rows = list(
        Region.objects.filter(image_id=image_id).values_list(
            "pk", "x0", "y0", "x1", "y1", "phrase", "caption", "flagged", "flag_reason",
            "image_width", "image_height",
        )
    )  # fmt: skip
    if not rows:
        return {}
    width, height = rows[0][9], rows[0][10]
    linted = [LintRegion(pk, (x0, y0, x1, y1), phrase, caption)
              for pk, x0, y0, x1, y1, phrase, caption, *_ in rows]  # fmt: skip
    flags = {row[0]: (row[7], row[8]) for row in rows}
    only = None
    if region_ids is not None:
        only = set(region_ids)
        if set(changed) - {"caption"}:
            moved = [r for r in linted if r.id in only]
            only |= {r.id for r in linted if any(may_affect(m, r) for m in moved)}
            only |= {pk for pk, (flagged, _) in flags.items() if flagged}
    found = lint_regions(linted, width, height, only=only)
    reasons = {pk: "; ".join(problems)[:64] for pk, problems in found.items()}
    # One UPDATE per distinct reason among the regions whose flag changed (usually none).
    changed_flags: dict[str, list[int]] = {}
    for pk, reason in reasons.items():
        if flags[pk] != (bool(reason), reason):
            changed_flags.setdefault(reason, []).append(pk)
    for reason, ids in changed_flags.items():
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
    "Reverted",
    "accept_remaining",
    "apply_lint",
    "claim_next_image",
    "close_undo_steps",
    "create_region",
    "delete_region",
    "record_undo_step",
    "release_lease",
    "renew_lease",
    "restore_version",
    "revert_change",
    "revert_changes",
    "undo_last_step",
    "update_region",
]
