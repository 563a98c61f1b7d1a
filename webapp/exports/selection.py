"""What a version takes: the filters a cut is asked with, and the rows they select.

``parse_filters`` is strict (an unknown key or a bad value is an ``ExportError`` naming it);
the querysets below are what both the cut's emptiness check and the writer read, so the two
can never disagree about what a filter selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from webapp.catalog.models import QuestionItem
from webapp.regions.models import Region

STATUS_CHOICES = ("accepted", "any")
ORIGINS = tuple(Region.Origin.values)
FILTER_KEYS = {
    "status",
    "origins",
    "min_score",
    "exclude_flagged",
    "approved_trajectories_only",
    "holdout_fraction",
}


class ExportError(ValueError):
    """A version that cannot be cut as asked; the message names the field or row at fault."""


@dataclass(frozen=True)
class Filters:
    status: str = "accepted"
    origins: list[str] = field(default_factory=list)  # empty: every origin
    min_score: float | None = None
    exclude_flagged: bool = True
    # True: approved trajectories only; False: every trajectory but the rejected ones.
    approved_trajectories_only: bool = True
    holdout_fraction: float = 0.0

    def region_q(self) -> Q:
        q = Q()
        if self.status == "accepted":
            q &= Q(status=Region.Status.ACCEPTED)
        if self.origins:
            q &= Q(origin__in=self.origins)
        if self.min_score is not None:
            q &= Q(score__gte=self.min_score)
        if self.exclude_flagged:
            q &= Q(flagged=False)
        return q


def parse_filters(raw: dict[str, Any] | None) -> Filters:
    """Strict: unknown keys and bad values raise ``ExportError`` naming the key."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - FILTER_KEYS)
    if unknown:
        raise ExportError(
            f"unknown filter {', '.join(unknown)}; known: {', '.join(sorted(FILTER_KEYS))}"
        )
    status = raw.get("status", "accepted")
    if status not in STATUS_CHOICES:
        raise ExportError(f"filter status={status!r}: one of {', '.join(STATUS_CHOICES)}")
    origins = raw.get("origins") or []
    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    bad = [o for o in origins if o not in ORIGINS]
    if bad:
        raise ExportError(f"filter origins: {', '.join(map(repr, bad))} not in {ORIGINS}")
    min_score = raw.get("min_score")
    if min_score is not None:
        try:
            min_score = float(min_score)
        except (TypeError, ValueError) as err:
            raise ExportError(f"filter min_score={min_score!r} is not a number") from err
        if not 0.0 <= min_score <= 1.0:
            raise ExportError(f"filter min_score={min_score} must be between 0 and 1")
    fraction = raw.get("holdout_fraction", 0.0)
    try:
        fraction = float(fraction)
    except (TypeError, ValueError) as err:
        raise ExportError(f"filter holdout_fraction={fraction!r} is not a number") from err
    if not 0.0 <= fraction < 1.0:
        raise ExportError(f"filter holdout_fraction={fraction} must be in [0, 1)")
    flags = {}
    for key in ("exclude_flagged", "approved_trajectories_only"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise ExportError(f"filter {key}={value!r} must be true or false")
        flags[key] = value
    return Filters(
        status=status,
        origins=sorted(set(origins)),
        min_score=min_score,
        holdout_fraction=fraction,
        **flags,
    )


def region_queryset(dataset_ids: list[int], filters: Filters):
    return Region.objects.filter(Q(image__dataset_id__in=dataset_ids) & filters.region_q())


def question_queryset(dataset_ids: list[int]):
    return QuestionItem.objects.filter(image__dataset_id__in=dataset_ids)


def trajectory_queryset(dataset_ids: list[int], filters: Filters):
    """The trajectories a cut takes: approved ones (``approved_trajectories_only``, the
    default), or else every one that was not rejected (generated and in-review ones too: a
    curator who turns the flag off asks for the unreviewed output of the loop)."""
    from webapp.trajectories.models import Trajectory

    queryset = Trajectory.objects.filter(dataset_id__in=dataset_ids)
    if filters.approved_trajectories_only:
        return queryset.filter(status=Trajectory.Status.APPROVED)
    return queryset.exclude(status=Trajectory.Status.REJECTED)


def describe_filters(filters: Filters) -> str:
    parts = [f"status={filters.status}"]
    if filters.origins:
        parts.append("origins=" + ",".join(filters.origins))
    if filters.min_score is not None:
        parts.append(f"min_score={filters.min_score}")
    if filters.exclude_flagged:
        parts.append("flagged excluded")
    return ", ".join(parts)
