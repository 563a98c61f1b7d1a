"""A small reviewed dataset: stored images, regions in every status, questions."""

from __future__ import annotations

import pytest

from tests.catalog.factories import (
    DatasetFactory,
    QuestionItemFactory,
    RegionFactory,
    stored_image,
)
from training.formats import STOP_PHRASE
from webapp.regions.models import Region
from webapp.trajectories.models import Trajectory, TrajectoryStep
from webapp.trajectories.services import update_trajectory

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


def make_trajectory(image, question, steps, *, status="generated", final="", item=None):
    """A trajectory with its steps ``(response, feedback, error_types)``, through the ORM."""
    trajectory = Trajectory.objects.create(
        dataset=image.dataset, image=image, question=question, final_answer=final,
        status=status, question_item=item,
    )  # fmt: skip
    for k, (response, feedback, errors) in enumerate(steps):
        TrajectoryStep.objects.create(
            trajectory=trajectory, k=k, response=response, feedback=feedback, error_types=errors
        )
    return trajectory


@pytest.fixture
def trajectories(reviewed):
    """Four trajectories on the first four images of "street", one per review outcome."""
    images = list(reviewed.images.order_by("id"))
    accepted = make_trajectory(
        images[0],
        "Where is the car?",
        [
            ("The car is right of the tree.", "The car is left of the tree.", ["spatial"]),
            ("The car is left of the tree.", STOP_PHRASE, []),
        ],
        status="approved",
        final="The car is left of the tree.",
    )
    # The loop ran out of steps; an annotator wrote the answer and approved it in the editor.
    corrected = make_trajectory(
        images[1],
        "What colour is the car?",
        [("The car is blue.", "The car is red, not blue.", ["attribute"])],
        status="in_review",
    )
    corrected = update_trajectory(
        trajectory_id=corrected.pk,
        expected_version=corrected.version,
        changes={"final_answer": "The car is red.", "status": "approved"},
    )
    rejected = make_trajectory(
        images[2], "How many trees?", [("Three trees.", "There is one tree.", ["object"])],
        status="rejected", final="One tree.",
    )  # fmt: skip
    unreviewed = make_trajectory(
        images[3],
        "Is there a tree?",
        [("No.", "There is a tall tree.", ["object"]), ("Yes, a tall tree.", "", [])],
    )
    return {"accepted": accepted, "corrected": corrected, "rejected": rejected,
            "unreviewed": unreviewed}  # fmt: skip


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
