"""End to end: a real Celery worker process takes the thumbnail task from Redis and writes to
PostgreSQL and the media folder, exactly as in production."""

from __future__ import annotations

import io
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from webapp.catalog.models import Dataset, Image
from webapp.catalog.tasks import make_thumbnails
from webapp.jobs.models import Run
from workers.imaging import inspect_image

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DEADLINE_S = 60


def stored_image(dataset: Dataset, data: bytes, name: str) -> Image:
    info = inspect_image(data)
    default_storage.save(info.storage_path, ContentFile(data))
    return Image.objects.create(
        dataset=dataset,
        sha256=info.sha256,
        width=info.width,
        height=info.height,
        format=info.format,
        storage_path=info.storage_path,
        file_name=name,
    )


def wait_for(predicate, worker, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died while waiting for {what}:\n{worker.log()}")
        time.sleep(0.2)
    pytest.fail(f"no {what} after {DEADLINE_S}s; worker log:\n{worker.log()}")


def test_a_worker_process_makes_thumbnails_from_redis_into_postgres(
    celery_worker_process, media_root, settings
):
    dataset = Dataset.objects.create(name="worker")
    out = io.BytesIO()
    PILImage.new("RGB", (800, 400), "green").save(out, "JPEG")
    image = stored_image(dataset, out.getvalue(), "green.jpg")
    noise = io.BytesIO()
    PILImage.effect_noise((300, 200), 64).convert("RGB").save(noise, "JPEG")
    corrupt = stored_image(dataset, noise.getvalue(), "cut.jpg")
    default_storage.delete(corrupt.storage_path)
    default_storage.save(corrupt.storage_path, ContentFile(noise.getvalue()[:2000]))

    result = make_thumbnails.delay([image.pk, corrupt.pk])

    path = wait_for(
        lambda: Image.objects.filter(pk=image.pk).values_list("thumbnail_path", flat=True)[0],
        celery_worker_process,
        "thumbnail path",
    )
    thumb_file = media_root / path
    assert thumb_file.is_file(), f"{thumb_file} was recorded but not written"
    with PILImage.open(thumb_file) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (settings.FGAM_THUMBNAIL_SIZE, settings.FGAM_THUMBNAIL_SIZE // 2)

    run = wait_for(
        lambda: Run.objects.filter(kind=Run.Kind.THUMBNAILS, finished_at__isnull=False).first(),
        celery_worker_process,
        "finished thumbnails run",
    )
    assert run.parameters["task_id"] == result.id
    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 2, 1, 1)
    assert run.errors[0]["image"] == corrupt.pk
    image.refresh_from_db()
    assert image.metadata["probe"]["format"] == "JPEG"
    assert "Task fgam.default.make_thumbnails" in celery_worker_process.log()
