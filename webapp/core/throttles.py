"""Rate limits on logging in and on trading a password for an API token, per client address.

DRF throttles, with their rates in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (settings
``FGAM_THROTTLE_LOGIN`` and ``FGAM_THROTTLE_TOKEN``); the counts live in Django's cache.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class AddressRateThrottle(SimpleRateThrottle):
    """Counts the requests of one client address within the scope's rate."""

    def get_rate(self) -> str:
        # Read when the throttle is made, not when the class was: settings can change in tests.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginRateThrottle(AddressRateThrottle):
    scope = "login"


class TokenRateThrottle(AddressRateThrottle):
    scope = "token"
