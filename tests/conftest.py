"""Shared fixtures.

Tests that need PostgreSQL, Redis or a Celery worker ask for them through ``require_service``:
absent services skip the test with the reason, unless ``FGAM_REQUIRE_SERVICES=1`` (CI), where
they fail it instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings

REQUIRE_SERVICES = os.environ.get("FGAM_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("FGAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_service(available: bool, reason: str) -> None:
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"FGAM_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def port_open(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """Tests run without ``collectstatic``: serve static files unhashed, as with DEBUG on."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Every test starts with empty rate-limit counts (they live in Django's cache), so the
    login and token throttles never trip on the attempts of an earlier test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def postgres() -> None:
    """The test database is PostgreSQL (set DATABASE_URL=postgres://...)."""
    require_service(on_postgres(), "DATABASE_URL does not point to PostgreSQL")


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis; database 15 is used so tests never touch real queues."""
    require_service(port_open(REDIS_URL, 6379), f"Redis is not reachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def media_root(tmp_path, settings):
    """Image bytes and thumbnails go to a fresh folder for each test."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": root},
        },
    }
    return root
