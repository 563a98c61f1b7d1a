"""Reads for the review pages: the counts they show and the rows they draw.

Each is a fixed number of queries whatever the number of regions: counts are aggregates (or a
window over the rows a page reads anyway), so a page's cost does not grow with the data.
Writes are elsewhere: ``services`` and, for the review page's actions, ``review_actions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Window
from django.db.models.functions import TruncHour

from webapp.catalog.models import Dataset
from webapp.regions import markup
from webapp.regions.models import Region, RegionChange
from webapp.regions.queue import QueueFilters, pending_regions

STATUSES = Region.Status.values


def datasets_with_pending(datasets: QuerySet[Dataset] | None = None) -> list[Dataset]:
    """Every dataset (of ``datasets``), by name, with ``pending``: how many of its regions
    wait for review."""
    datasets = Dataset.objects.all() if datasets is None else datasets
    return list(
        datasets.order_by("name").annotate(
            pending=Count(
                "images__regions", filter=Q(images__regions__status=Region.Status.PENDING)
            )
        )
    )


def queue_matching(dataset_id: int, filters: QueueFilters) -> dict[str, int]:
    """How many pending ``regions`` the queue's filters match, on how many ``images``."""
    return pending_regions(dataset_id, filters).aggregate(
        regions=Count("pk"), images=Count("image_id", distinct=True)
    )


def image_status_counts(image_id: int) -> dict[str, int]:
    """The image's regions: ``total`` and how many have each status."""
    return Region.objects.filter(image_id=image_id).aggregate(
        total=Count("pk"), **{s: Count("pk", filter=Q(status=s)) for s in STATUSES}
    )


def review_page_regions(
    image_id: int, limit: int
) -> tuple[dict[str, int], list[markup.RegionView]]:
    """The image's first ``limit`` regions as plain rows, and the count of each status.

    One query: the counts are a window over the image's rows, taken before the LIMIT.
    """
    window = {f"n_{s}": Window(Count("pk", filter=Q(status=s))) for s in STATUSES}
    rows = list(
        Region.objects.filter(image_id=image_id)
        .annotate(**window)
        .order_by("pk")
        .values_list(*markup.RegionView.FIELDS, *window)[:limit]
    )
    width = len(markup.RegionView.FIELDS)
    counts = (
        dict(zip(STATUSES, rows[0][width:], strict=True)) if rows else dict.fromkeys(STATUSES, 0)
    )
    return counts, [markup.RegionView(*row[:width]) for row in rows]


def regions_by_id(ids: Iterable[int]) -> list[Region]:
    """The regions as they are now, in id order (to redraw rows an action changed)."""
    return list(Region.objects.filter(pk__in=list(ids)).order_by("pk"))


def dataset_counts(dataset: Dataset) -> dict[str, int]:
    """The dataset's regions: ``total``, ``flagged``, ``status_<s>`` and ``origin_<o>``."""
    return Region.objects.filter(image__dataset=dataset).aggregate(
        total=Count("pk"),
        flagged=Count("pk", filter=Q(flagged=True)),
        **{f"status_{s}": Count("pk", filter=Q(status=s)) for s in STATUSES},
        **{f"origin_{o}": Count("pk", filter=Q(origin=o)) for o in Region.Origin.values},
    )


def reviews_since(
    dataset: Dataset, since: datetime, *, limit: int = 200
) -> tuple[list[dict[str, Any]], dict[datetime, int]]:
    """People's accepts and rejects in the dataset since ``since``: per annotator and hour
    (the ``limit`` newest rows), and per hour."""
    reviews = RegionChange.objects.filter(
        region__image__dataset=dataset,
        at__gte=since,
        user__isnull=False,
        after__status__in=[Region.Status.ACCEPTED, Region.Status.REJECTED],
    )
    per_user = list(
        reviews.annotate(hour=TruncHour("at"))
        .values("user__username", "hour")
        .annotate(n=Count("pk"))
        .order_by("-hour", "user__username")[:limit]
    )
    by_hour = dict(
        reviews.annotate(hour=TruncHour("at"))
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    return per_user, by_hour
