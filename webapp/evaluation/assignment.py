"""Handing items to raters, and saving their ratings.

Claiming: every item has exactly ``raters_per_item`` seats (``Assignment`` rows made when the
round opens). A seat is free when it was never taken, or when it is pending and its lease has
lapsed. ``claim_next`` locks one free seat with ``SELECT ... FOR UPDATE SKIP LOCKED`` (so
concurrent raters never queue on one row, they each take a different one) and takes it with a
conditional ``UPDATE`` whose row count is checked. It can never over-assign an item, since the
seats are fixed; the partial unique index on (item, rater) stops one rater taking two seats of
one item even if the same person asks twice at once (the loser retries another item).

Load balancing: among free seats of items the rater has not seen, the item with the fewest
taken seats (done, or pending with a live lease) goes first, then the earliest item of the
sample, so every item gets its first rater before any gets its second and a round fills
evenly; a rater who works faster simply gets more items. A rater keeps at most one pending
item per round: asking again returns it (and renews its lease) until it is rated.

Blindness: the responses' order is a seeded permutation per (round seed, rater, item), recorded
on the seat when it is taken, and reused on every reload.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp.core.versioning import Conflict, versioned_update
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Assignment, Rating, RatingChange, Response, Round

CLAIM_ATTEMPTS = 8


class RoundNotOpen(InputError):
    pass


class NotYours(LookupError):
    """The assignment is not the rater's (any more): it lapsed and went to someone else."""


class RatingConflict(Conflict):
    pass


def response_order(
    *, seed: int, rater_id: int, item_id: int, response_ids: Sequence[int]
) -> list[int]:
    """The order in which one rater sees one item's responses: stable, and unrelated to system.

    >>> response_order(seed=0, rater_id=1, item_id=2, response_ids=[5, 6, 7])
    [6, 5, 7]
    >>> response_order(seed=0, rater_id=1, item_id=2, response_ids=[7, 6, 5])
    [6, 5, 7]
    """
    ordered = sorted(response_ids)
    random.Random(f"{seed}:{rater_id}:{item_id}").shuffle(ordered)
    return ordered


def _free(now) -> Q:
    return Q(status=Assignment.Status.OPEN) | Q(
        status=Assignment.Status.PENDING, leased_until__lt=now
    )


def _taken(now) -> Q:
    return Q(status=Assignment.Status.DONE) | Q(
        status=Assignment.Status.PENDING, leased_until__gte=now
    )


def current_assignment(round_: Round, rater) -> Assignment | None:
    """The rater's pending item in the round, if any (lapsed or not, as long as it is theirs)."""
    return (
        Assignment.objects.filter(round=round_, rater=rater, status=Assignment.Status.PENDING)
        .order_by("claimed_at")
        .first()
    )


def claim_next(round_: Round, rater) -> Assignment | None:
    """The rater's pending item (lease renewed), else a newly claimed one; None when the rater
    has nothing left to rate in the round."""
    if not Round.objects.filter(pk=round_.pk, status=Round.Status.OPEN).exists():
        raise RoundNotOpen(f"round {round_.name!r} is not open")
    lease = timedelta(seconds=round_.lease_seconds)
    mine = current_assignment(round_, rater)
    if mine is not None:
        now = timezone.now()
        Assignment.objects.filter(pk=mine.pk, rater=rater).update(leased_until=now + lease)
        mine.leased_until = now + lease
        return mine
    for _ in range(CLAIM_ATTEMPTS):
        try:
            claimed = _claim_one(round_, rater, lease)
        except IntegrityError:
            continue  # the same rater won another seat of that item a moment ago
        if claimed is not None:
            return claimed
        if not _has_free_seat_for(round_, rater):
            return None
    return None


def _has_free_seat_for(round_: Round, rater) -> bool:
    now = timezone.now()
    seen = Assignment.objects.filter(round=round_, rater=rater).values("item_id")
    return Assignment.objects.filter(_free(now), round=round_).exclude(item_id__in=seen).exists()


def _claim_one(round_: Round, rater, lease: timedelta) -> Assignment | None:
    now = timezone.now()
    taken = (
        Assignment.objects.filter(_taken(now), item_id=OuterRef("item_id"))
        .order_by()
        .values("item_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    seen = Assignment.objects.filter(round=round_, rater=rater).values("item_id")
    with transaction.atomic():
        seat = (
            Assignment.objects.filter(_free(now), round=round_)
            .exclude(item_id__in=seen)
            .annotate(taken=Coalesce(Subquery(taken, output_field=IntegerField()), Value(0)))
            .order_by("taken", "item__position", "seat")
            .select_for_update(skip_locked=True, of=("self",))
            .only("pk", "item_id", "status", "handovers")
            .first()
        )
        if seat is None:
            return None
        responses = Response.objects.filter(item_id=seat.item_id).values_list("pk", flat=True)
        order = response_order(
            seed=round_.seed, rater_id=rater.pk, item_id=seat.item_id, response_ids=list(responses)
        )
        handover = 1 if seat.status == Assignment.Status.PENDING else 0
        with transaction.atomic():  # a savepoint: the unique index may refuse this rater
            won = Assignment.objects.filter(_free(now), pk=seat.pk).update(
                rater=rater, status=Assignment.Status.PENDING, leased_until=now + lease,
                claimed_at=now, order=order, handovers=F("handovers") + handover,
            )  # fmt: skip
        if not won:
            return None
    return Assignment.objects.select_related("item").get(pk=seat.pk)


# --- Ratings ------------------------------------------------------------------------------------


@dataclass
class RatingInput:
    """One response's rating as a rater sent it (slot is 1-based, as shown)."""

    slot: int
    scores: dict[str, int]
    hallucination: bool = False
    error_types: set[str] = field(default_factory=set)
    version: int | None = None

    def values(self) -> dict[str, Any]:
        return {
            "scores": dict(self.scores),
            "hallucination": self.hallucination,
            "error_types": sorted(self.error_types),
        }


def validate_inputs(round_: Round, inputs: Sequence[RatingInput], slots: int) -> None:
    """Every slot rated once, on every criterion, with known error types; errors name the
    response and the criterion as the rater sees them."""
    labels = {c["key"]: c["label"] for c in round_.criteria["likert"]}
    known = set(round_.error_type_keys)
    given = sorted(i.slot for i in inputs)
    if given != list(range(1, slots + 1)):
        raise InputError(f"rate each of responses 1 to {slots} once (got {given or 'none'})")
    for rating in inputs:
        for key, label in labels.items():
            value = rating.scores.get(key)
            if value is None:
                raise InputError(f"Response {rating.slot}: {label} is missing")
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                raise InputError(f"Response {rating.slot}: {label} must be 1 to 5")
        extra = set(rating.scores) - set(labels)
        if extra:
            raise InputError(f"Response {rating.slot}: unknown criteria {', '.join(sorted(extra))}")
        unknown = rating.error_types - known
        if unknown:
            raise InputError(
                f"Response {rating.slot}: unknown error types {', '.join(sorted(unknown))}"
            )


def _record(user):
    def record(row: Rating, before: dict, after: dict) -> None:
        RatingChange.objects.create(
            rating=row, user=user, version=row.version, before=before, after=after
        )

    return record


def submit_ratings(*, assignment_id: int, rater, inputs: Sequence[RatingInput]) -> Assignment:
    """Save a rater's ratings of one item: the first time all at once (the seat becomes done),
    later as revisions of single responses, each with the version it read.

    Raises ``NotYours`` (the seat is someone else's), ``RoundNotOpen`` (closed: no more
    changes), ``InputError`` (a missing or bad value, named), ``RatingConflict`` (a stale
    version: another tab saved first).
    """
    assignment = (
        Assignment.objects.select_related("round").filter(pk=assignment_id, rater=rater).first()
    )
    if assignment is None:
        raise NotYours(
            "this item is no longer yours: its lease lapsed and it went to another rater"
        )
    round_ = assignment.round
    if round_.status != Round.Status.OPEN:
        raise RoundNotOpen(
            f"round {round_.name!r} is {round_.status}; ratings can no longer change"
        )
    order = list(assignment.order)
    validate_inputs(round_, inputs, len(order))
    by_slot = {i.slot: i for i in inputs}
    if assignment.status == Assignment.Status.PENDING:
        return _first_submission(assignment, rater, order, by_slot)
    return _revise(assignment, rater, order, by_slot)


def _first_submission(
    assignment: Assignment, rater, order: list[int], by_slot: Mapping[int, RatingInput]
) -> Assignment:
    now = timezone.now()
    with transaction.atomic():
        if not Assignment.objects.filter(
            pk=assignment.pk, rater=rater, status=Assignment.Status.PENDING
        ).update(status=Assignment.Status.DONE, done_at=now, leased_until=None):
            raise NotYours("this item is no longer yours, or was saved meanwhile")
        ratings = Rating.objects.bulk_create(
            Rating(assignment=assignment, response_id=response_id, updated_by=rater,
                   **by_slot[slot].values())
            for slot, response_id in enumerate(order, start=1)
        )  # fmt: skip
        RatingChange.objects.bulk_create(
            RatingChange(rating=r, user=rater, version=1, before=None, after=r.snapshot())
            for r in ratings
        )
    assignment.refresh_from_db()
    return assignment


def _revise(
    assignment: Assignment, rater, order: list[int], by_slot: Mapping[int, RatingInput]
) -> Assignment:
    current = {r.response_id: r for r in assignment.ratings.all()}
    with transaction.atomic():
        for slot, response_id in enumerate(order, start=1):
            wanted = by_slot[slot]
            rating = current[response_id]
            values = wanted.values()
            if values == {k: v for k, v in rating.snapshot().items() if k != "version"}:
                continue
            versioned_update(
                Rating, pk=rating.pk, expected_version=wanted.version or rating.version,
                snapshot=Rating.snapshot, columns=values, record=_record(rater), user=rater,
                conflict=RatingConflict,
            )  # fmt: skip
    return assignment


def slot_ratings(assignment: Assignment) -> dict[int, Rating]:
    """The rater's saved ratings by slot (1-based), as the page and the API show them."""
    by_response = {r.response_id: r for r in assignment.ratings.all()}
    return {
        slot: by_response[rid]
        for slot, rid in enumerate(assignment.order, start=1)
        if rid in by_response
    }


def progress(round_: Round, rater=None) -> dict[str, int]:
    """Seats done and in total for the round, and how many items this rater has done."""
    counts = Assignment.objects.filter(round=round_).aggregate(
        total=Count("pk"), done=Count("pk", filter=Q(status=Assignment.Status.DONE))
    )
    if rater is not None:
        counts["mine"] = Assignment.objects.filter(
            round=round_, rater=rater, status=Assignment.Status.DONE
        ).count()
    counts["percent"] = round(100 * counts["done"] / counts["total"]) if counts["total"] else 0
    return counts
