"""What each action of the review page does, one function per action.

An action is a write from ``services`` (which keeps history and versions whole) together with
what the review page adds to it: one step on the annotator's undo stack (``UndoStep``), the
renewal of their lease on the image, and the consistency checks after the commit. The view
parses the form, calls one of these and renders what it returns. They raise what the writes
raise: ``RegionConflict`` for a stale version or a missing region, ``BoxError`` and
``ValueError`` for a value that cannot be written (then nothing is written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from webapp.regions import selectors, services
from webapp.regions.models import Region, RegionChange
from webapp.regions.services import Reverted


@dataclass
class Changed:
    """What an action changed, as the page redraws it: rows changed, rows drawn, rows gone,
    and the history rows it made (together, its undo step)."""

    image_id: int
    regions: list[Region] = field(default_factory=list)
    added: list[Region] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    changes: list[int] = field(default_factory=list)


def edit(*, region_id: int, expected_version: int, changes: dict[str, Any], user) -> Changed:
    """Accept, reject, reset, rewrite or move one region (``changes`` as ``update_region``).

    The region is not read first: a missing one is a ``RegionConflict`` like a stale version
    ("deleted meanwhile"), and the image comes from the row the write locked.
    """
    # One commit for the change, its undo step and the lease (each commit waits for the disk).
    # The lease is the last lock taken, so this cannot deadlock with another save.
    with transaction.atomic():
        updated = services.update_region(
            region_id=region_id, expected_version=expected_version, changes=changes, user=user
        )
        change = updated.last_change
        services.record_undo_step(user=user, image_id=updated.image_id, change_ids=[change.pk])
        services.renew_lease(image_id=updated.image_id, user=user)
    # The checks run after the commit, in their own statements: holding this region's lock
    # while flagging others could deadlock with a save that holds one of those.
    others: list[Region] = []
    if set(changes) - {"status"}:
        # The checks read captions, phrases and boxes only: a status change cannot move a flag.
        reasons = services.apply_lint(
            image_id=updated.image_id, region_ids=[updated.pk], changed=changes
        )
        reason = reasons.get(updated.pk, updated.flag_reason)
        updated.flagged, updated.flag_reason = bool(reason), reason
        # A moved box or renamed phrase can flag or clear other rows too: send those as well.
        moved = [pk for pk in reasons if pk != updated.pk]
        if moved:
            others = selectors.regions_by_id(moved)
    return Changed(image_id=updated.image_id, regions=[updated, *others], changes=[change.pk])


def draw(*, image, box, phrase: str, caption: str, user) -> Changed:
    """A box the detector missed, drawn by the annotator (origin human)."""
    region = services.create_region(image=image, box=box, phrase=phrase, caption=caption, user=user)
    services.renew_lease(image_id=image.pk, user=user)
    change = region.changes.only("pk").last()
    services.record_undo_step(user=user, image_id=image.pk, change_ids=[change.pk])
    return Changed(image_id=image.pk, added=[region], changes=[change.pk])


def delete(*, region: Region, expected_version: int, user) -> Changed:
    """Delete a region the annotator drew (the others are rejected instead)."""
    services.delete_region(region_id=region.pk, expected_version=expected_version, user=user)
    change = RegionChange.objects.filter(region_id=region.pk).only("pk").last()
    services.record_undo_step(user=user, image_id=region.image_id, change_ids=[change.pk])
    return Changed(image_id=region.image_id, removed=[region.pk], changes=[change.pk])


def accept_all(*, image_id: int, user) -> Changed:
    """Accept every region of the image that is still pending."""
    changes = services.accept_remaining(image_id=image_id, user=user)
    services.renew_lease(image_id=image_id, user=user)
    regions = selectors.regions_by_id(c.region_id for c in changes)
    change_ids = [c.pk for c in changes]
    services.record_undo_step(user=user, image_id=image_id, change_ids=change_ids)
    return Changed(image_id=image_id, regions=regions, changes=change_ids)


def undo(*, image, user, change_ids: list[int]) -> Reverted:
    """Ctrl+Z: undo the annotator's last action on the image, as new versions.

    Without ``change_ids`` it takes the newest open step of the user's undo stack, so it still
    works after a reload. With them (clients of the earlier protocol, tests) it undoes exactly
    those, which must be the user's own (else ``PermissionDenied``). A region someone changed
    since stops the undo there (``Reverted.conflict``); the checks run only when it went through.
    """
    if change_ids:
        mine = RegionChange.objects.filter(pk__in=change_ids, user=user).values_list("pk")
        if len(set(mine)) != len(change_ids):
            raise PermissionDenied("Only your own changes can be undone here.")
        services.close_undo_steps(user=user, image_id=image.pk, change_ids=change_ids)
        done = services.revert_changes(change_ids=change_ids, user=user, image=image)
    else:
        done = services.undo_last_step(user=user, image=image)
    if done.made and not done.conflict and not done.error:
        services.apply_lint(image_id=image.pk)
    return done


def restore(*, change_id: int, image_id: int, expected_version: int, user) -> Changed:
    """Bring a region back to the state after an earlier change, recorded as a new change."""
    restored, made = services.restore_version(
        change_id=change_id, expected_version=expected_version, user=user
    )
    services.apply_lint(image_id=image_id)
    restored.refresh_from_db()
    services.record_undo_step(user=user, image_id=image_id, change_ids=[made.pk])
    return Changed(image_id=image_id, regions=[restored], changes=[made.pk])
