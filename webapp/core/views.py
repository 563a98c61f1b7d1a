"""Logging in, with a rate limit on attempts."""

from __future__ import annotations

import math

from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.shortcuts import render

from webapp.core.throttles import LoginRateThrottle


def too_many_attempts(request, wait: float | None) -> HttpResponse:
    """429 with a page that says how long to wait, and ``Retry-After``."""
    seconds = math.ceil(wait) if wait else None
    response = render(request, "core/throttled.html", {"seconds": seconds}, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


class LoginView(auth_views.LoginView):
    """Django's login form; each client address may post it ``FGAM_THROTTLE_LOGIN`` times."""

    def post(self, request, *args, **kwargs) -> HttpResponse:
        throttle = LoginRateThrottle()
        if not throttle.allow_request(request, self):
            return too_many_attempts(request, throttle.wait())
        return super().post(request, *args, **kwargs)
