import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_float, env_int, env_list, env_optional_float


def settings_error(**env: str) -> str:
    """Import the settings module in a fresh interpreter with ``env`` and return stderr."""
    full = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL")}
    full.update(env)
    done = subprocess.run(
        [sys.executable, "-c", "import webapp.settings"],
        env=full,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0, "settings loaded although the environment is invalid"
    return done.stderr


def test_a_bad_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG")


def test_a_bad_integer_or_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("FGAM_THUMBNAIL_SIZE", "big")
    with pytest.raises(ImproperlyConfigured, match="FGAM_THUMBNAIL_SIZE"):
        env_int("FGAM_THUMBNAIL_SIZE", 256)
    monkeypatch.setenv("FGAM_BOX_THRESHOLD", "nan")
    with pytest.raises(ImproperlyConfigured, match="FGAM_BOX_THRESHOLD"):
        env_float("FGAM_BOX_THRESHOLD", 0.35)


def test_the_box_clip_tolerance_is_unset_none_or_a_number(monkeypatch):
    name = "FGAM_BOX_CLIP_TOLERANCE"
    monkeypatch.delenv(name, raising=False)
    assert env_optional_float(name, minimum=0.0) is None
    monkeypatch.setenv(name, "None")
    assert env_optional_float(name, minimum=0.0) is None
    monkeypatch.setenv(name, "4")
    assert env_optional_float(name, minimum=0.0) == 4.0
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ImproperlyConfigured, match=r"is not a number >= 0\.0 or none"):
        env_optional_float(name, minimum=0.0)


def test_an_empty_host_in_a_list_is_rejected(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example,,b.example")
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS"):
        env_list("ALLOWED_HOSTS", [])


def test_secret_key_is_required_once_debug_is_off():
    assert "SECRET_KEY is required" in settings_error(DEBUG="0")


def test_an_unsupported_database_url_is_refused():
    stderr = settings_error(DEBUG="1", DATABASE_URL="mysql://root@127.0.0.1/test")
    assert "DATABASE_URL" in stderr


def test_a_bad_value_in_fgam_settings_stops_start_up():
    stderr = settings_error(DEBUG="1", FGAM_DTYPE="float8")
    assert "FGAM_DTYPE='float8' is not one of auto, float32, float16, bfloat16" in stderr
