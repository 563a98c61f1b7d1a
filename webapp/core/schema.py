"""How the OpenAPI schema describes this project's own API classes."""

from drf_spectacular.authentication import SessionScheme


class PolicySessionScheme(SessionScheme):
    """The session login (``webapp.core.permissions.SessionAuthentication``) is a cookie, as
    DRF's own."""

    target_class = "webapp.core.permissions.SessionAuthentication"
