"""Who may do what in evaluation: curators set rounds up and read results; raters rate.

Annotators get 403 everywhere here; raters get 403 on every curator page (and on the rest of
the workbench, e.g. the review pages, which check their own roles).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import prefetch_related_objects
from rest_framework.permissions import BasePermission

from webapp.core.roles import CURATOR, RATER


def roles_of(user) -> set[str]:
    """The user's role names (groups prefetched, so the page header reuses them)."""
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return {CURATOR, RATER}
    prefetch_related_objects([user], "groups")
    return {g.name for g in user.groups.all()}


def is_curator(user) -> bool:
    return CURATOR in roles_of(user)


def is_rater(user) -> bool:
    return RATER in roles_of(user)


def require_curator(user) -> None:
    if not is_curator(user):
        raise PermissionDenied(
            "Setting up evaluation rounds and reading results needs the curator role."
        )


def require_rater(user) -> None:
    if not is_rater(user):
        raise PermissionDenied("Rating needs the rater role.")


def require_evaluation_user(user) -> None:
    if not (is_curator(user) or is_rater(user)):
        raise PermissionDenied("Evaluation needs the curator or rater role.")


class IsCurator(BasePermission):
    message = "This needs the curator role."

    def has_permission(self, request, view) -> bool:
        return is_curator(request.user)


class IsRater(BasePermission):
    message = "This needs the rater role."

    def has_permission(self, request, view) -> bool:
        return is_rater(request.user)


class IsCuratorOrRater(BasePermission):
    message = "This needs the curator or rater role."

    def has_permission(self, request, view) -> bool:
        return is_curator(request.user) or is_rater(request.user)
