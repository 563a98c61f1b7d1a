"""DRF permissions built on the roles in ``webapp.core.roles``."""

from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from webapp.core.roles import CURATOR, has_role


class IsCurator(BasePermission):
    """Curators (and superusers) may change what is in the catalog: imports, runs, versions."""

    message = "This needs the curator role."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return has_role(request.user, CURATOR)
