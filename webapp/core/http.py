"""The web plumbing every page module shares: the typed request, htmx fragments and ``Vary``,
parsing form and query fields, SVG coordinates, and uploads written to a temporary file.

Pages answer htmx requests with a fragment of their own template and plain requests with the
whole page, so every such answer depends on the ``HX-Request`` header and says so in ``Vary``
(``vary_on_htmx``); a cache in between then never hands a fragment to a plain request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class HtmxRequest(HttpRequest):
    """A request as the views see it: ``HtmxMiddleware`` has added ``htmx``, and the user is
    logged in (``LoginRequiredMiddleware`` lets no one else through to a page)."""

    htmx: HtmxDetails
    user: AbstractBaseUser


vary_on_htmx = vary_on_headers("HX-Request")


def wants_fragment(request: HtmxRequest) -> bool:
    """An htmx swap wants the fragment; a history restore after a cache miss wants the page."""
    return bool(request.htmx) and not request.htmx.history_restore_request


class BadInput(ValueError):
    """A form or query field that cannot be used as sent; the message names the field."""


def parse_int(
    value: str | None, name: str, *, default: int | None = None, minimum: int | None = None
) -> int:
    """A whole number from a form or query field.

    A blank field gives ``default`` when there is one; anything else that is not a whole
    number, or is below ``minimum``, raises ``BadInput``.

    >>> parse_int("12", "k"), parse_int(" ", "seed", default=0)
    (12, 0)
    >>> parse_int("", "version")
    Traceback (most recent call last):
    ...
    webapp.core.http.BadInput: version must be a whole number
    >>> parse_int("-1", "after", minimum=0)
    Traceback (most recent call last):
    ...
    webapp.core.http.BadInput: after must not be below 0
    """
    if default is not None and (value is None or value.strip() == ""):
        return default
    try:
        number = int(value or "")
    except ValueError:
        raise BadInput(f"{name} must be a whole number") from None
    if minimum is not None and number < minimum:
        raise BadInput(f"{name} must not be below {minimum}")
    return number


def svg_number(value: float) -> str:
    """A coordinate in pixels with at most three decimals and no trailing zeros.

    >>> svg_number(12.0), svg_number(12.5), svg_number(1 / 3)
    ('12', '12.5', '0.333')
    """
    return f"{value:.3f}".rstrip("0").rstrip(".")


def svg_rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, str]:
    """The attributes of an SVG ``<rect>`` for a box given by its corners.

    >>> svg_rect(10, 20, 110.5, 80)
    {'x': '10', 'y': '20', 'width': '100.5', 'height': '60'}
    """
    return {
        "x": svg_number(x0),
        "y": svg_number(y0),
        "width": svg_number(x1 - x0),
        "height": svg_number(y1 - y0),
    }


def upload_name(upload: UploadedFile, default: str) -> str:
    """The uploaded file's own name, without any folder the browser sent, or ``default``."""
    return Path(upload.name or default).name or default


def write_upload(upload: UploadedFile, target: Path) -> Path:
    """Write an uploaded file to ``target`` chunk by chunk, so a large one never sits in memory
    whole, and return ``target``."""
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return target


@contextmanager
def upload_in_temporary_folder(upload: UploadedFile, *, name: str, prefix: str) -> Iterator[Path]:
    """The upload written to ``name`` in a fresh temporary folder, for readers that want a path;
    the folder is removed when the block ends."""
    with TemporaryDirectory(prefix=prefix) as folder:
        yield write_upload(upload, Path(folder) / name)
