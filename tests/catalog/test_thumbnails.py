"""Thumbnails are made once from the stored bytes and then served from storage."""

from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from tests.catalog.factories import ImageFactory, UserFactory, stored_image
from webapp.catalog import thumbnails, views
from webapp.catalog.models import Image
from webapp.catalog.thumbnails import NoStoredBytes, ensure_thumbnail, thumbnail_name
from workers.imaging import ImageProblem

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Counts real thumbnail generations."""
    made: list[int] = []
    real = thumbnails.make_thumbnail

    def counting(data, size, **kwargs):
        made.append(size)
        return real(data, size, **kwargs)

    monkeypatch.setattr(thumbnails, "make_thumbnail", counting)
    return made


def test_ensure_thumbnail_makes_a_jpeg_once_and_records_it(media_root, settings, calls):
    settings.FGAM_THUMBNAIL_SIZE = 32
    image = stored_image(width=200, height=100)
    name = ensure_thumbnail(image)
    assert name == f"thumbs/{image.sha256[:2]}/{image.sha256}-32.jpg"
    assert Image.objects.get(pk=image.pk).thumbnail_path == name
    with PILImage.open(media_root / name) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (32, 16)

    fresh = Image.objects.get(pk=image.pk)
    assert ensure_thumbnail(fresh) == name
    assert calls == [32]


def test_the_same_picture_in_two_datasets_shares_one_thumbnail(media_root, calls):
    image = stored_image()
    twin = ImageFactory(sha256=image.sha256, storage_path=image.storage_path)
    assert ensure_thumbnail(image) == ensure_thumbnail(twin)
    assert len(calls) == 1
    assert len(list((media_root / "thumbs" / image.sha256[:2]).iterdir())) == 1


def test_a_deleted_thumbnail_is_made_again(media_root, calls):
    image = stored_image()
    name = ensure_thumbnail(image)
    (media_root / name).unlink()
    assert ensure_thumbnail(image) == name
    assert (media_root / name).exists() and len(calls) == 2


def test_no_bytes_and_bad_bytes_raise_clear_errors(media_root):
    with pytest.raises(NoStoredBytes, match="reference mode"):
        ensure_thumbnail(ImageFactory(uri="https://example.org/x.jpg"))
    broken = stored_image()
    (media_root / broken.storage_path).write_bytes(b"not an image")
    with pytest.raises(ImageProblem):
        ensure_thumbnail(broken)
    assert Image.objects.get(pk=broken.pk).thumbnail_path == ""


def test_the_thumbnail_view_generates_on_first_request_then_serves_the_same_file(
    client, media_root, calls
):
    client.force_login(UserFactory(roles=["annotator"]))
    image = stored_image(width=300, height=200)
    first = client.get(f"/images/{image.pk}/thumb")
    assert first.status_code == 200
    assert first["Content-Type"] == "image/jpeg"
    body = b"".join(first.streaming_content)
    assert PILImage.open(io.BytesIO(body)).format == "JPEG"
    assert first["ETag"].startswith(f'"{image.sha256}')
    assert "private" in first["Cache-Control"] and "max-age=" in first["Cache-Control"]

    path = media_root / Image.objects.get(pk=image.pk).thumbnail_path
    mtime = path.stat().st_mtime_ns
    second = client.get(f"/images/{image.pk}/thumb")
    assert b"".join(second.streaming_content) == body
    assert path.stat().st_mtime_ns == mtime
    assert len(calls) == 1

    cached = client.get(f"/images/{image.pk}/thumb", HTTP_IF_NONE_MATCH=first["ETag"])
    assert cached.status_code == 304


class RemoteStorage:
    """Like S3: no local ``path``; files are fetched from ``url``."""

    def __init__(self, real):
        self.real = real

    def path(self, name):
        raise NotImplementedError("This backend doesn't support absolute paths.")

    def url(self, name):
        return f"https://bucket.example.org/{name}"

    def __getattr__(self, attr):
        return getattr(self.real, attr)


def test_remote_storage_redirects_to_the_storage_url(client, media_root, monkeypatch):
    client.force_login(UserFactory(roles=["annotator"]))
    image = stored_image()
    monkeypatch.setattr(views, "default_storage", RemoteStorage(default_storage))
    response = client.get(f"/images/{image.pk}/file")
    assert response.status_code == 302
    assert response["Location"] == f"https://bucket.example.org/{image.storage_path}"
    thumb = client.get(f"/images/{image.pk}/thumb")
    assert thumb.status_code == 302
    assert thumb["Location"] == f"https://bucket.example.org/{thumbnail_name(image.sha256, 256)}"
