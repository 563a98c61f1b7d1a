"""The exhaustive-review mark of an image: every visible object of the vocabulary has a box.

An image so marked (``Image.exhaustively_reviewed_at``, with who in ``..._by``) is the only kind
that may supply the "no" answers of object probes: a name without an accepted box on it means
the object is absent, while on any other image it proves nothing.

Decisions taken here:

- An image with pending regions cannot be marked: a pending box may be the very object a "no"
  probe would deny. The review page answers with a notice, the bulk paths count it as skipped.
- Marking an image already marked keeps the first who and when (marking is idempotent), and
  clearing an unmarked one does nothing; the counts say which happened.
- On the review page a mark is one step of the annotator's undo stack (``UndoStep`` with
  ``review_mark``), so Ctrl+Z on the image clears it again (or puts back the earlier mark).
  The undo is a conditional ``UPDATE`` on the mark the step wrote: if someone changed the mark
  since, nothing is overwritten and the step is closed as superseded.
- The bulk paths (API, ``mark_reviewed``) record no undo step: they are undone by the opposite
  bulk call.

This module reads and writes ``catalog.Image`` rows only through their model, so the regions
app keeps importing nothing but the catalog's models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from webapp.catalog.models import Image
from webapp.regions.models import Region, UndoStep


class StillPending(ValueError):
    """The image still has pending regions, so it cannot be marked exhaustively reviewed."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        noun = "region is" if pending == 1 else "regions are"
        super().__init__(f"{pending} {noun} still pending: accept or reject them first")


@dataclass
class MarkCounts:
    """What a bulk mark did: images changed, already in the wanted state, skipped (pending
    regions), and not found (or not visible to the caller)."""

    changed: int = 0
    unchanged: int = 0
    pending: int = 0
    missing: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "changed": self.changed,
            "unchanged": self.unchanged,
            "pending": self.pending,
            "missing": self.missing,
        }


def _state(at: datetime | None, by: int | None) -> dict[str, Any]:
    return {"at": at.isoformat() if at else None, "by": by}


def _has_pending():
    return Exists(Region.objects.filter(image_id=OuterRef("pk"), status=Region.Status.PENDING))


def mark_image(*, image_id: int, reviewed: bool, user) -> UndoStep | None:
    """Mark (or clear) one image from the review page, as one step of the user's undo stack.

    Raises ``StillPending`` when marking an image with pending regions. Returns the undo step,
    or None when the image was already in the wanted state (nothing to undo).
    """
    with transaction.atomic():
        image = (
            Image.objects.select_for_update()
            .only("pk", "exhaustively_reviewed_at", "exhaustively_reviewed_by")
            .get(pk=image_id)
        )
        if reviewed == (image.exhaustively_reviewed_at is not None):
            return None
        if reviewed:
            pending = Region.objects.filter(image_id=image_id, status=Region.Status.PENDING).count()
            if pending:
                raise StillPending(pending)
        before = _state(image.exhaustively_reviewed_at, image.exhaustively_reviewed_by_id)
        at = timezone.now() if reviewed else None
        by = user.pk if reviewed else None
        Image.objects.filter(pk=image_id).update(
            exhaustively_reviewed_at=at, exhaustively_reviewed_by_id=by
        )
        return UndoStep.objects.create(
            user=user,
            image_id=image_id,
            changes=[],
            review_mark={"before": before, "after": _state(at, by)},
        )


def revert_mark(*, image_id: int, review_mark: dict[str, Any]) -> bool:
    """Put back the mark an undo step found, if the image still has the mark the step wrote.

    Returns False (nothing written) when someone changed the mark since.
    """
    before, after = review_mark["before"], review_mark["after"]
    after_at = parse_datetime(after["at"]) if after["at"] else None
    before_at = parse_datetime(before["at"]) if before["at"] else None
    still = Image.objects.filter(pk=image_id, exhaustively_reviewed_by_id=after["by"])
    if after_at is None:
        still = still.filter(exhaustively_reviewed_at__isnull=True)
    else:
        still = still.filter(exhaustively_reviewed_at=after_at)
    return bool(
        still.update(exhaustively_reviewed_at=before_at, exhaustively_reviewed_by_id=before["by"])
    )


def mark_images(*, images, image_ids: Iterable[int] | None, reviewed: bool, user) -> MarkCounts:
    """Mark or clear many images at once (the API and ``mark_reviewed``): three queries.

    ``images`` is the queryset the caller may touch (already scoped to the datasets they may
    open); ``image_ids`` picks from it, or None for all of it. Images with pending regions
    are skipped when marking.
    """
    counts = MarkCounts()
    chosen = images if image_ids is None else images.filter(pk__in=list(image_ids))
    if image_ids is not None:
        wanted = set(image_ids)
        found = set(chosen.values_list("pk", flat=True))
        counts.missing = len(wanted - found)
    if reviewed:
        target = chosen.filter(exhaustively_reviewed_at__isnull=True)
        counts.unchanged = chosen.filter(exhaustively_reviewed_at__isnull=False).count()
        counts.pending = target.filter(_has_pending()).count()
        counts.changed = target.filter(~_has_pending()).update(
            exhaustively_reviewed_at=timezone.now(), exhaustively_reviewed_by=user
        )
    else:
        counts.unchanged = chosen.filter(exhaustively_reviewed_at__isnull=True).count()
        counts.changed = chosen.filter(exhaustively_reviewed_at__isnull=False).update(
            exhaustively_reviewed_at=None, exhaustively_reviewed_by=None
        )
    return counts


def images_with_accepted(images):
    """Of ``images``, those with at least one accepted region (``--all-with-accepted``)."""
    accepted = Region.objects.filter(image_id=OuterRef("pk"), status=Region.Status.ACCEPTED)
    return images.filter(Exists(accepted))
