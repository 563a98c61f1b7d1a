"""The editor queue: which trajectories still wait for people, filtered, in which order.

Reads only; claiming one (a lease) is ``services.claim_next``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from training.formats import ERROR_TYPES
from webapp.trajectories.models import Trajectory, TrajectoryLease, TrajectoryStep

# The statuses a queue may be narrowed to: those that still wait for people.
QUEUE_STATUSES = (Trajectory.Status.GENERATED, Trajectory.Status.IN_REVIEW)


class BadFilter(ValueError):
    """A queue filter value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class QueueFilters:
    """What the editor asked the queue for. Empty values mean "any"."""

    status: str = ""
    error_type: str = ""
    run: int | None = None
    seeded_error: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> QueueFilters:
        """From GET or POST parameters; raises ``BadFilter`` naming the field at fault."""
        status = (query.get("status") or "").strip()
        if status and status not in QUEUE_STATUSES:
            raise BadFilter(f"status must be one of {', '.join(QUEUE_STATUSES)}")
        values = {}
        for name in ("error_type", "seeded_error"):
            value = (query.get(name) or "").strip()
            if value and value not in ERROR_TYPES:
                raise BadFilter(f"{name} must be one of {', '.join(ERROR_TYPES)}")
            values[name] = value
        run_text = (query.get("run") or "").strip()
        try:
            run = int(run_text) if run_text else None
        except ValueError:
            raise BadFilter(f"run must be a run id, not {run_text!r}") from None
        return cls(status=status, run=run, **values)

    def as_query(self) -> dict[str, str]:
        """The non-empty filters as query parameters (the inverse of ``from_query``)."""
        return {k: str(v) for k, v in asdict(self).items() if v not in (None, "")}


def _tagged(name: str) -> Q:
    """Steps tagged ``name``. PostgreSQL answers JSON containment from the column; SQLite (the
    quick start) has no ``@>``, so there the tag is matched as quoted text in the JSON list."""
    if connection.vendor == "postgresql":
        return Q(error_types__contains=[name])
    return Q(error_types__icontains=f'"{name}"')


def has_error_type(name: str) -> Exists:
    """Trajectories with a step tagged ``name`` (for ``filter``)."""
    return Exists(TrajectoryStep.objects.filter(_tagged(name), trajectory_id=OuterRef("pk")))


def tagged_trajectory_ids(name: str) -> QuerySet:
    """The ids of trajectories with a step tagged ``name`` (for a ``pk__in`` lookup)."""
    return TrajectoryStep.objects.filter(_tagged(name)).values("trajectory_id")


def open_trajectories(dataset_id: int, filters: QueueFilters) -> QuerySet[Trajectory]:
    """The dataset's trajectories that wait for people and match ``filters``."""
    statuses = [filters.status] if filters.status else list(QUEUE_STATUSES)
    rows = Trajectory.objects.filter(dataset_id=dataset_id, status__in=statuses)
    if filters.run is not None:
        rows = rows.filter(run_id=filters.run)
    if filters.seeded_error:
        rows = rows.filter(seeded_error=filters.seeded_error)
    if filters.error_type:
        rows = rows.filter(has_error_type(filters.error_type))
    return rows


def candidate_trajectories(
    dataset_id: int,
    filters: QueueFilters,
    *,
    user_id: int,
    now: datetime,
    exclude: Iterable[int] = (),
    limit: int = 20,
) -> list[int]:
    """Ids to offer next, oldest first, leaving out trajectories leased live to others."""
    leased = TrajectoryLease.objects.filter(dataset_id=dataset_id, expires_at__gt=now).exclude(
        user_id=user_id
    )
    rows = open_trajectories(dataset_id, filters).exclude(pk__in=leased.values("trajectory_id"))
    exclude = list(exclude)
    if exclude:
        rows = rows.exclude(pk__in=exclude)
    return list(rows.order_by("pk").values_list("pk", flat=True)[:limit])
