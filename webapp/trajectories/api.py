"""REST routes of this app: (prefix, viewset, basename), registered by webapp.api_urls."""

ROUTES: list[tuple[str, type, str]] = []
