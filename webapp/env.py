"""Strict parsing of environment variables.

Every reader raises ``ImproperlyConfigured`` naming the variable when its value cannot be
parsed, so a typo in a deployment fails at start-up instead of half-working.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {expected}") from exc


def env_str(name: str, default: str = "") -> str:
    return _parse(name, default, str, "a string")


def env_bool(name: str, default: bool = False) -> bool:
    def parse(raw: str) -> bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(raw)

    return _parse(name, default, parse, "a boolean (one of 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    def parse(raw: str) -> int:
        value = int(raw)
        if minimum is not None and value < minimum:
            raise ValueError(raw)
        return value

    bound = f" >= {minimum}" if minimum is not None else ""
    return _parse(name, default, parse, f"an integer{bound}")


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    def parse(raw: str) -> float:
        value = float(raw)
        if value != value or (minimum is not None and value < minimum):
            raise ValueError(raw)
        return value

    bound = f" >= {minimum}" if minimum is not None else ""
    return _parse(name, default, parse, f"a number{bound}")


def env_optional_float(name: str, *, minimum: float | None = None) -> float | None:
    """A number, or ``None`` when the variable is unset, empty or ``none``."""

    def parse(raw: str) -> float | None:
        if raw.lower() == "none":
            return None
        value = float(raw)
        if value != value or (minimum is not None and value < minimum):
            raise ValueError(raw)
        return value

    bound = f" >= {minimum}" if minimum is not None else ""
    return _parse(name, None, parse, f"a number{bound} or none")


def env_list(name: str, default: list[str]) -> list[str]:
    def parse(raw: str) -> list[str]:
        items = [item.strip() for item in raw.split(",")]
        if any(not item for item in items):
            raise ValueError(raw)
        return items

    return _parse(name, default, parse, "a comma-separated list without empty items")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(raw)
        return raw

    return _parse(name, default, parse, f"one of {', '.join(choices)}")


_RATE_PERIODS = ("s", "sec", "m", "min", "h", "hour", "d", "day")


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, ``<requests>/<period>`` (period: s, m, h or d, or sec, min, ...)."""

    def parse(raw: str) -> str:
        count, _, period = raw.partition("/")
        if not count.isdigit() or int(count) < 1 or period not in _RATE_PERIODS:
            raise ValueError(raw)
        return raw

    return _parse(name, default, parse, "a rate such as 10/min (period: s, min, hour or day)")
