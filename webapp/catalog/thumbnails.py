"""Thumbnails: made once from the stored bytes, kept in storage, shared by the UI and the task.

``ensure_thumbnail`` is the only writer. The thumbnail view calls it on first request and the
``fgam.default.make_thumbnails`` task calls it after an import, so both agree on the name and
neither makes a second copy. Names are content-addressed (``thumbs/ab/<sha256>-<size>.jpg``):
the same picture in two datasets shares one thumbnail, and a change of
``FGAM_THUMBNAIL_SIZE`` makes new names instead of overwriting what is cached in browsers.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from webapp.catalog.models import Image
from workers.imaging import make_thumbnail


class NoStoredBytes(LookupError):
    """The image has no bytes in our storage (reference mode, or the file went missing)."""


def thumbnail_name(sha256: str, size: int) -> str:
    return f"thumbs/{sha256[:2]}/{sha256}-{size}.jpg"


def read_stored_bytes(image: Image) -> bytes:
    if not image.storage_path:
        raise NoStoredBytes(f"image {image.pk} has no stored file (reference mode)")
    try:
        with default_storage.open(image.storage_path, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise NoStoredBytes(f"stored file {image.storage_path!r} does not exist") from exc


def ensure_thumbnail(image: Image, *, size: int | None = None, data: bytes | None = None) -> str:
    """The storage name of ``image``'s thumbnail, generating and recording it if needed.

    ``data`` is the image's stored bytes when the caller has already read them, so they are
    not read from storage a second time. Raises ``NoStoredBytes`` when there is nothing to
    make it from and ``workers.imaging.ImageProblem`` when the stored bytes are not a usable
    image.
    """
    if image.thumbnail_path and default_storage.exists(image.thumbnail_path):
        return image.thumbnail_path
    size = size or settings.FGAM_THUMBNAIL_SIZE
    name = thumbnail_name(image.sha256, size)
    if not default_storage.exists(name):
        if data is None:
            data = read_stored_bytes(image)
        thumb = make_thumbnail(data, size, max_pixels=settings.FGAM_MAX_IMAGE_PIXELS)
        saved = default_storage.save(name, ContentFile(thumb))
        if saved != name:
            # Someone else wrote the same thumbnail meanwhile; theirs is identical, keep one.
            default_storage.delete(saved)
    # Conditional: only replace what this caller read, so a concurrent writer is not undone.
    Image.objects.filter(pk=image.pk, thumbnail_path=image.thumbnail_path).update(
        thumbnail_path=name
    )
    image.thumbnail_path = name
    return name
