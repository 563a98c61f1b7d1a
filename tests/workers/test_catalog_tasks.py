"""The thumbnail task in eager mode (no broker): the same task code, run in-process."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from PIL import Image as PILImage

from webapp import celery_app
from webapp.catalog.models import Dataset, Image
from webapp.catalog.services import enqueue_thumbnails, process_new_images
from webapp.catalog.tasks import make_thumbnails
from webapp.jobs.models import Run
from workers.imaging import inspect_image

pytestmark = pytest.mark.django_db


def encode(image: PILImage.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def stored_image(dataset: Dataset, data: bytes, name: str, **fields) -> Image:
    """An Image row whose bytes are in default storage, as an importer leaves it."""
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
        **fields,
    )


@pytest.fixture
def dataset(db) -> Dataset:
    return Dataset.objects.create(name="tasks")


@pytest.fixture
def png(dataset, media_root) -> Image:
    data = encode(PILImage.new("RGBA", (640, 480), (200, 30, 30, 255)), "PNG")
    return stored_image(dataset, data, "red.png", metadata={"source_note": "kept"})


@pytest.fixture
def corrupt(dataset, media_root) -> Image:
    """A JPEG cut in half: the header reads fine, decoding fails."""
    data = encode(PILImage.effect_noise((300, 200), 64).convert("RGB"), "JPEG")
    image = stored_image(dataset, data, "noise.jpg")
    truncated = data[: len(data) // 2]
    default_storage.delete(image.storage_path)
    default_storage.save(image.storage_path, ContentFile(truncated))
    return image


def thumbnail_of(image: Image) -> PILImage.Image:
    image.refresh_from_db()
    assert image.thumbnail_path, "no thumbnail was recorded"
    with default_storage.open(image.thumbnail_path, "rb") as fh:
        thumb = PILImage.open(io.BytesIO(fh.read()))
        thumb.load()
    return thumb


def test_it_stores_a_jpeg_thumbnail_and_the_probe(png, settings):
    result = make_thumbnails.delay([png.pk]).get()

    thumb = thumbnail_of(png)
    assert thumb.format == "JPEG"
    assert max(thumb.size) == settings.FGAM_THUMBNAIL_SIZE
    assert thumb.size == (256, 192)
    probe = png.metadata["probe"]
    assert (probe["format"], probe["mode"], probe["has_alpha"]) == ("PNG", "RGBA", True)
    assert png.metadata["source_note"] == "kept"
    run = Run.objects.get(pk=result["run"])
    assert (run.kind, run.status) == (Run.Kind.THUMBNAILS, Run.Status.SUCCEEDED)
    assert (run.total, run.done, run.failed, run.errors) == (1, 1, 0, [])
    assert run.dataset == png.dataset
    assert run.summary["processed"] == 1
    assert run.started_at <= run.finished_at


def test_a_second_call_skips_images_already_done(png):
    make_thumbnails.delay([png.pk])
    png.refresh_from_db()
    first_path = png.thumbnail_path

    result = make_thumbnails.delay([png.pk]).get()

    run = Run.objects.get(pk=result["run"])
    assert run.status == Run.Status.SUCCEEDED
    assert (run.summary["processed"], run.summary["skipped"]) == (0, 1)
    png.refresh_from_db()
    assert png.thumbnail_path == first_path
    assert Run.objects.filter(kind=Run.Kind.THUMBNAILS).count() == 2


def test_a_corrupt_image_is_recorded_and_the_others_still_get_thumbnails(png, corrupt):
    result = make_thumbnails.delay([corrupt.pk, png.pk]).get()

    run = Run.objects.get(pk=result["run"])
    assert run.status == Run.Status.SUCCEEDED
    assert (run.total, run.done, run.failed) == (2, 1, 1)
    [error] = run.errors
    assert error["image"] == corrupt.pk
    assert error["file"] == corrupt.storage_path
    assert error["permanent"] is True
    assert "truncated" in error["error"] or "corrupt" in error["error"]
    corrupt.refresh_from_db()
    assert corrupt.thumbnail_path == ""
    assert "probe" not in corrupt.metadata
    assert thumbnail_of(png).format == "JPEG"


def test_an_image_whose_file_is_gone_is_a_permanent_failure(png):
    default_storage.delete(png.storage_path)

    result = make_thumbnails.delay([png.pk]).get()

    run = Run.objects.get(pk=result["run"])
    assert (run.status, run.failed) == (Run.Status.SUCCEEDED, 1)
    assert "does not exist" in run.errors[0]["error"]


def test_ids_of_deleted_images_are_counted_and_ignored(png):
    result = make_thumbnails.delay([png.pk, png.pk + 1000]).get()

    run = Run.objects.get(pk=result["run"])
    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 2, 2, 0)
    assert run.summary["missing"] == 1


def test_a_storage_outage_fails_the_run_and_a_retry_of_the_task_continues_it(png, monkeypatch):
    real_open = FileSystemStorage.open
    calls = []

    def flaky_open(self, name, mode="rb"):
        calls.append(name)
        if len(calls) == 1:
            raise ConnectionError("storage unreachable")
        return real_open(self, name, mode)

    monkeypatch.setattr(FileSystemStorage, "open", flaky_open)
    assert ConnectionError in make_thumbnails.autoretry_for  # so the worker retries, backing off

    with pytest.raises(ConnectionError):
        process_new_images(image_ids=[png.pk], task_id="task-1")
    [run] = Run.objects.filter(kind=Run.Kind.THUMBNAILS)
    assert (run.status, run.error) == (Run.Status.FAILED, "ConnectionError: storage unreachable")

    process_new_images(image_ids=[png.pk], task_id="task-1")  # what the retry runs

    [run] = Run.objects.filter(kind=Run.Kind.THUMBNAILS)
    assert (run.status, run.done, run.error) == (Run.Status.SUCCEEDED, 1, "")
    png.refresh_from_db()
    assert png.thumbnail_path


def test_the_stored_bytes_are_read_once_per_image(png, monkeypatch):
    real_open = FileSystemStorage.open
    opened = []

    def counting_open(self, name, mode="rb"):
        opened.append(name)
        return real_open(self, name, mode)

    monkeypatch.setattr(FileSystemStorage, "open", counting_open)
    process_new_images(image_ids=[png.pk])

    assert opened.count(png.storage_path) == 1
    png.refresh_from_db()
    assert png.thumbnail_path


def test_enqueueing_waits_for_the_commit_and_splits_ids_into_chunks(
    dataset, media_root, django_capture_on_commit_callbacks
):
    images = [
        stored_image(dataset, encode(PILImage.new("RGB", (40 + i, 30), "blue"), "PNG"), f"{i}.png")
        for i in range(5)
    ]

    with django_capture_on_commit_callbacks() as callbacks:
        queued = enqueue_thumbnails([image.pk for image in images], chunk_size=2)
        assert not Run.objects.exists(), "nothing may run before the import commits"
    assert queued == len(callbacks) == 3
    for callback in callbacks:
        callback()

    runs = Run.objects.filter(kind=Run.Kind.THUMBNAILS).order_by("pk")
    assert [run.total for run in runs] == [2, 2, 1]
    assert all(run.status == Run.Status.SUCCEEDED for run in runs)
    assert not Image.objects.filter(thumbnail_path="").exists()


def test_the_task_is_routed_to_the_default_queue():
    router = celery_app.amqp.router
    assert router.route({}, "fgam.default.make_thumbnails")["queue"].name == "default"
    assert router.route({}, "fgam.gpu.x")["queue"].name == "gpu"
    assert router.route({}, "fgam.llm.x")["queue"].name == "llm"
    assert make_thumbnails.name == "fgam.default.make_thumbnails"
    assert make_thumbnails.acks_late is True
