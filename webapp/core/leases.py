"""Leases: one work item handed to one person until a deadline, race-free, shared by the
region review queue and the trajectory editor queue.

A lease model has a unique key field (the image for region review, the trajectory for the
editor), a ``user``, ``expires_at`` and ``claimed_at``; nothing else is assumed. Claiming takes
over a row that is expired or already the claimer's with one conditional ``UPDATE``, or inserts
a new row and loses cleanly to a concurrent insert through the unique key's ``IntegrityError``.
An expired row is simply free; nothing needs to sweep it. Race-free on PostgreSQL and SQLite
alike, without table locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

CLAIM_BATCH = 20


def lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.FGAM_LEASE_SECONDS)


def try_claim(
    model: type[models.Model], *, key: dict[str, Any], user, now: datetime, **extra: Any
) -> bool:
    """Take the lease on ``key`` (e.g. ``{"image_id": 5}``) if free, expired or already ours.

    ``extra`` fills the other columns of a new row (the dataset, for instance).
    """
    until = lease_until(now)
    taken = (
        model.objects.filter(**key)  # type: ignore[attr-defined]
        .filter(Q(user=user) | Q(expires_at__lte=now))
        .update(user=user, expires_at=until, claimed_at=now)
    )
    if taken:
        return True
    try:
        with transaction.atomic():
            model.objects.create(  # type: ignore[attr-defined]
                **key, **extra, user=user, expires_at=until, claimed_at=now
            )
    except IntegrityError:
        return False
    return True


def claim_next(
    model: type[models.Model],
    *,
    key_field: str,
    candidates: Callable[[datetime, set[Any]], list[Any]],
    user,
    scope: dict[str, Any],
    exclude: Iterable[Any] = (),
    attempts: int = 5,
) -> Any | None:
    """Lease the first free candidate to ``user`` and give back their other leases in ``scope``.

    ``candidates(now, exclude)`` returns keys best first, leaving out items leased live to
    someone else; a candidate lost to a concurrent claimer is excluded and the next one tried.
    ``scope`` (e.g. ``{"dataset_id": 3}``) is both the extra columns of a new lease and the set
    of leases a person holds one at a time.
    """
    excluded = set(exclude)
    for _ in range(attempts):
        now = timezone.now()
        found = candidates(now, excluded)
        if not found:
            return None
        for value in found:
            if try_claim(model, key={key_field: value}, user=user, now=now, **scope):
                model.objects.filter(**scope, user=user).exclude(  # type: ignore[attr-defined]
                    **{key_field: value}
                ).delete()
                return value
            excluded.add(value)
    return None


def renew(model: type[models.Model], *, key: dict[str, Any], user) -> bool:
    """Extend the user's live lease (each saved action does); False if it is not theirs."""
    now = timezone.now()
    return bool(
        model.objects.filter(**key, user=user, expires_at__gt=now).update(  # type: ignore[attr-defined]
            expires_at=lease_until(now)
        )
    )


def release(model: type[models.Model], *, key: dict[str, Any], user) -> bool:
    """Give the item back to the pool (only the holder can)."""
    deleted, _ = model.objects.filter(**key, user=user).delete()  # type: ignore[attr-defined]
    return bool(deleted)
