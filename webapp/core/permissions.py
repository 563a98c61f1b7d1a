"""The policy table (``webapp.core.policy``) applied to the REST API.

Every DRF view names its resource in ``policy_resource``; ``policy_actions`` maps a viewset
action to a policy action where "safe methods read, the others write" is not what it does.
``PolicyPermission`` is the default permission class, so a view without a resource refuses
everyone rather than letting anyone in.

Session-authenticated API calls get their CSRF check here, after the policy allowed them, not
during authentication: Django's check looks for a form field first and so parses a POST body,
which for an upload means spooling it to disk before the policy could refuse it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import authentication
from rest_framework.permissions import BasePermission

from webapp.core.policy import NO_ROLE_MESSAGE, READ, WRITE, allows, needs
from webapp.core.roles import roles_of

if TYPE_CHECKING:  # DRF's settings import this module while rest_framework.views loads.
    from rest_framework.request import Request
    from rest_framework.views import APIView

_CSRF_PENDING = "_fgam_csrf_pending"


class SessionAuthentication(authentication.SessionAuthentication):
    """Session login for the API, with its CSRF check left to ``PolicyPermission``."""

    def enforce_csrf(self, request: Request) -> None:
        setattr(request, _CSRF_PENDING, True)

    def enforce_csrf_now(self, request: Request) -> None:
        super().enforce_csrf(request)


def api_rule(view: APIView, method: str) -> tuple[str, str] | None:
    """(resource, action) of a request to ``view``, or ``None`` for a view without a rule."""
    resource = getattr(view, "policy_resource", None)
    if resource is None:
        return None
    actions = getattr(view, "policy_actions", {})
    action = actions.get(getattr(view, "action", None) or "")
    if action is None:
        action = READ if method in ("GET", "HEAD", "OPTIONS") else WRITE
    return resource, action


class PolicyPermission(BasePermission):
    """Allow a request when the policy table lets the user's roles do the view's action."""

    message = "This route has no rule in the policy table."

    def has_permission(self, request: Request, view: APIView) -> bool:
        rule = api_rule(view, request.method or "GET")
        if rule is None:
            return False
        if not allows(request.user, *rule):
            no_role = request.user.is_authenticated and not roles_of(request.user)
            self.message = NO_ROLE_MESSAGE if no_role else needs(*rule)
            return False
        if getattr(request, _CSRF_PENDING, False):
            setattr(request, _CSRF_PENDING, False)
            SessionAuthentication().enforce_csrf_now(request)
        return True
