"""A small reviewed dataset: stored images, regions in every status, questions."""

from __future__ import annotations

import pytest

from tests.catalog.factories import (
    DatasetFactory,
    QuestionItemFactory,
    RegionFactory,
    stored_image,
)
from webapp.regions.models import Region

ACCEPTED = Region.Status.ACCEPTED


@pytest.fixture
def reviewed(media_root):
    """Dataset "street": 8 images; per image 2 accepted regions (one detector with a score),
    one pending, one rejected, one accepted but flagged; one question per image."""
    dataset = DatasetFactory(name="street")
    for n in range(8):
        image = stored_image(dataset, width=128, height=96, captions=[f"scene {n}", "other"])
        RegionFactory(
            image=image, x0=1.5, y0=2.0, x1=30.25, y1=40.0, phrase=f"car {n}",
            caption=f"a red car number {n}", status=ACCEPTED,
        )  # fmt: skip
        RegionFactory(
            image=image, x0=10.0, y0=5.0, x1=60.0, y1=47.0, phrase="tree",
            caption="a tall tree", origin=Region.Origin.DETECTOR, score=0.8712345678,
            status=ACCEPTED,
        )  # fmt: skip
        RegionFactory(image=image, phrase="pending thing")
        RegionFactory(image=image, phrase="rejected thing", status=Region.Status.REJECTED)
        RegionFactory(image=image, phrase="flagged", status=ACCEPTED, flagged=True)
        QuestionItemFactory(
            image=image, question=f"What is left of the tree in {n}?",
            reference=None if n % 3 == 0 else f"car {n}",
        )  # fmt: skip
    return dataset


# Shared fixtures of other test packages: a real Celery worker, a tiny random CLIP on disk.
from tests.training.conftest import tiny_clip  # noqa: E402, F401
from tests.workers.conftest import start_celery_worker  # noqa: E402, F401

TINY_JOB = {
    "max_steps": 4,
    "log_every": 1,
    "batch_size": 2,
    "num_workers": 0,
    "warmup_steps": 1,
    "holdout_fraction": 0.25,
    "eval_max_images": 4,
    "save_every": 1000,
    "relation_hidden": 16,
    "device": "cpu",
}
