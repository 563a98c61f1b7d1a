"""The review queue: which images still have pending regions, filtered and in which order.

Reads only; claiming an image (a lease) is ``services.claim_next_image``.

Two paths, chosen per request by ``uses_stored_queue``:

- **Stored** (PostgreSQL, no region filter set; either order): ``QueueEntry`` keeps each image's
  pending count and priority (kept by triggers, see ``models.QueueEntry``), so "next" is an
  index scan on a partial index (``queue_by_priority`` or ``queue_by_image``) that skips the
  images leased to others and stops after ``limit`` rows, whatever the dataset's size.
- **Over regions** (any of origin, score range, phrase, run or flagged set; or SQLite): the
  filters apply to single regions, so the queue reads the pending regions themselves: by image
  order an ``EXISTS`` per image walked in id order, by uncertainty an aggregate over the
  matching pending regions. Correct for every filter, slower on a large dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Case, Exists, F, FloatField, Min, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Abs

from webapp.catalog.models import Image
from webapp.jobs.models import Run
from webapp.regions.models import Lease, QueueEntry, Region

ORDERS = ("uncertainty", "image")


class BadFilter(ValueError):
    """A queue filter value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class QueueFilters:
    """What the annotator asked the queue for. Empty values mean "any"."""

    origin: str = ""
    min_score: float | None = None
    max_score: float | None = None
    phrase: str = ""
    run: int | None = None
    flagged: bool = False
    order: str = "uncertainty"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> QueueFilters:
        """From GET or POST parameters; raises ``BadFilter`` naming the field at fault."""

        def number(name: str, kind=float):
            value = (query.get(name) or "").strip()
            if not value:
                return None
            try:
                return kind(value)
            except ValueError:
                raise BadFilter(f"{name} must be a number, not {value!r}") from None

        origin = (query.get("origin") or "").strip()
        if origin and origin not in Region.Origin.values:
            raise BadFilter(f"origin must be one of {', '.join(Region.Origin.values)}")
        order = (query.get("order") or "uncertainty").strip()
        if order not in ORDERS:
            raise BadFilter(f"order must be one of {', '.join(ORDERS)}")
        return cls(
            origin=origin,
            min_score=number("min_score"),
            max_score=number("max_score"),
            phrase=(query.get("phrase") or "").strip()[:200],
            run=number("run", int),
            flagged=(query.get("flagged") or "") in ("1", "on", "true"),
            order=order,
        )

    @property
    def narrows_regions(self) -> bool:
        """True when a filter on single regions is set (anything but the order)."""
        return bool(
            self.origin
            or self.min_score is not None
            or self.max_score is not None
            or self.phrase
            or self.run is not None
            or self.flagged
        )

    def as_query(self) -> dict[str, str]:
        """The non-empty filters as query parameters (the inverse of ``from_query``)."""
        out = {}
        for key, value in asdict(self).items():
            if value in (None, "", False) or (key == "order" and value == "uncertainty"):
                continue
            out[key] = "1" if value is True else str(value)
        return out


def _region_filter(filters: QueueFilters) -> Q:
    q = Q(status=Region.Status.PENDING)
    if filters.origin:
        q &= Q(origin=filters.origin)
    if filters.min_score is not None:
        q &= Q(score__gte=filters.min_score)
    if filters.max_score is not None:
        q &= Q(score__lte=filters.max_score)
    if filters.phrase:
        q &= Q(phrase__icontains=filters.phrase)
    if filters.run is not None:
        q &= Q(run_id=filters.run)
    if filters.flagged:
        q &= Q(flagged=True)
    return q


def pending_regions(dataset_id: int, filters: QueueFilters) -> QuerySet[Region]:
    return Region.objects.filter(_region_filter(filters), image__dataset_id=dataset_id)


def _run_thresholds(dataset_id: int) -> Case | Value:
    """Each pseudo-label run's ``box_threshold`` as a CASE on ``run_id`` (NULL for others).

    A dataset has a handful of runs, so one small query and a literal CASE beat a join into
    every region row's run and a JSON lookup per row.
    """
    thresholds = [
        (pk, params.get("box_threshold"))
        for pk, params in Run.objects.filter(
            dataset_id=dataset_id, kind=Run.Kind.PSEUDO_LABEL
        ).values_list("pk", "parameters")
    ]
    whens = [
        When(run_id=pk, then=Value(float(t))) for pk, t in thresholds if isinstance(t, int | float)
    ]
    null = Value(None, output_field=FloatField())
    return Case(*whens, default=null, output_field=FloatField()) if whens else null


def uses_stored_queue(filters: QueueFilters) -> bool:
    """Whether "next" can read ``QueueEntry`` (see the module docstring) for these filters."""
    return connection.vendor == "postgresql" and not filters.narrows_regions


def candidate_images(
    dataset_id: int,
    filters: QueueFilters,
    *,
    user_id: int,
    now: datetime,
    exclude: Iterable[int] = (),
    limit: int = 20,
) -> list[int]:
    """Ids of images to offer next, best first, leaving out images leased live to others.

    ``uncertainty`` puts first the image whose most uncertain pending region has a score
    nearest its run's ``box_threshold`` (|score - threshold| ascending); regions without a
    score or a run threshold (ground truth, human) come last. ``image`` is plain id order.
    """
    leased = Lease.objects.filter(dataset_id=dataset_id, expires_at__gt=now).exclude(
        user_id=user_id
    )
    exclude = list(exclude)
    if uses_stored_queue(filters):
        entries = QueueEntry.objects.filter(dataset_id=dataset_id, pending__gt=0).exclude(
            image_id__in=leased.values("image_id")
        )
        if exclude:
            entries = entries.exclude(image_id__in=exclude)
        if filters.order == "image":
            entries = entries.order_by("image_id")
        else:
            entries = entries.order_by(F("priority").asc(nulls_last=True), "image_id")
        return list(entries.values_list("image_id", flat=True)[:limit])
    if filters.order == "image":
        # Walk the images in id order and stop at the first ``limit`` with a matching pending
        # region: EXISTS on the (image, status) index, no aggregate over the whole dataset.
        matching = Region.objects.filter(_region_filter(filters), image_id=OuterRef("pk"))
        images = (
            Image.objects.filter(dataset_id=dataset_id)
            .filter(Exists(matching))
            .exclude(pk__in=leased.values("image_id"))
            .exclude(pk__in=exclude)
            .order_by("pk")
        )
        return list(images.values_list("pk", flat=True)[:limit])
    regions = pending_regions(dataset_id, filters).exclude(image_id__in=leased.values("image_id"))
    if exclude:
        regions = regions.exclude(image_id__in=exclude)
    threshold = _run_thresholds(dataset_id)
    rows = (
        regions.values("image_id")
        .annotate(uncertainty=Min(Abs(F("score") - threshold)))
        .order_by(F("uncertainty").asc(nulls_last=True), "image_id")
    )
    return [row["image_id"] for row in rows[:limit]]
