"""Fixtures for run tests: a tiny random Grounding DINO on disk and datasets of stored images.

Tests run eagerly (no broker): the same Celery tasks run in-process when the transaction
commits. Tests inside pytest-django's wrapping transaction run the commit callbacks through
``run_eagerly`` (``django_capture_on_commit_callbacks(execute=True)``), which also runs the
callbacks those callbacks register, as a real commit would.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory
from webapp.catalog.models import Dataset, Image
from webapp.regions.models import Region
from workers.tiny_models import build_tiny_grounding_dino

CAPTIONS = [
    "a brown dog next to a red car on the street",
    "two cats sitting on a white sofa",
    "a man holding a kite in a green field",
    "a bus and a truck on the road near a tree",
]


@pytest.fixture(scope="session")
def tiny_detector_dir(tmp_path_factory) -> str:
    return str(build_tiny_grounding_dino(tmp_path_factory.getbasetemp() / "tiny-grounding-dino"))


def scene_bytes(n: int, size: tuple[int, int]) -> bytes:
    """A PNG with a few coloured shapes; ``n`` makes each one different."""
    image = PILImage.new("RGB", size, ((37 * n) % 256, 90, 160))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle((w // 8, h // 6, w // 2, h // 2 + n % 7), fill=(200, 40 + n % 50, 40))
    draw.ellipse((w // 2, h // 3, w - 10, h - 10), fill=(30, 160, 60 + n % 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def stored_scene(dataset: Dataset, n: int, size=(160, 120), **fields) -> Image:
    data = scene_bytes(n, size)
    sha = hashlib.sha256(data).hexdigest()
    path = f"images/{sha[:2]}/{sha}.png"
    if not default_storage.exists(path):
        default_storage.save(path, ContentFile(data))
    return ImageFactory(
        dataset=dataset,
        sha256=sha,
        width=size[0],
        height=size[1],
        format="PNG",
        storage_path=path,
        file_name=f"scene_{n:03d}.png",
        captions=[CAPTIONS[n % len(CAPTIONS)]],
        **fields,
    )


@pytest.fixture
def make_scenes(media_root) -> Callable[..., Dataset]:
    """``make_scenes(count, name=..., sizes=...)``: a dataset of stored scenes with gt regions."""

    def make(count: int = 6, *, name: str = "scenes", sizes=((160, 120), (128, 128))) -> Dataset:
        dataset = DatasetFactory(name=name)
        for n in range(count):
            image = stored_scene(dataset, n, sizes[n % len(sizes)])
            RegionFactory(
                image=image, phrase=["dog", "cat", "red car"][n % 3], origin=Region.Origin.GT
            )
        return dataset

    return make


@pytest.fixture
def run_eagerly(django_capture_on_commit_callbacks):
    """Call ``fn(**kwargs)`` and run every commit callback it leaves, as a commit would."""

    def call(fn, /, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = fn(**kwargs)
        if hasattr(result, "refresh_from_db"):
            result.refresh_from_db()
        return result

    return call


def region_set(run) -> set[tuple]:
    """What a run proposed, without ids or run numbers: comparable across runs."""
    return {
        (
            r.image_id,
            r.x0,
            r.y0,
            r.x1,
            r.y1,
            round(r.score, 6),
            r.phrase,
            r.source_key.split(":", 2)[2],
        )
        for r in Region.objects.filter(run=run)
    }


TESTS_DIR = Path(__file__).resolve().parent
