"""What the PostgreSQL benchmarks share: a database of their own, dropped and made again on
every run, and Django set up on it the way a page benchmark needs (the test client's host,
static URLs without a collectstatic manifest, every migration applied)."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse


def recreate_database(url: str) -> None:
    """Drop and create the database ``url`` names; refused unless its name contains "bench",
    so a benchmark can never drop a real database."""
    import psycopg

    name = urlparse(url).path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    admin = urlparse(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_for_pages(url: str) -> None:
    """A fresh database at ``url``, Django set up on it and migrated, ready for the test
    client."""
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["testserver"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    call_command("migrate", verbosity=0)
