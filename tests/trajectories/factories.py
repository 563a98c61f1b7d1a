"""Trajectories for tests: a question and a chain of (answer, feedback) steps on an image."""

from __future__ import annotations

from webapp.trajectories.models import Trajectory, TrajectoryChange, TrajectoryStep
from webapp.trajectories.services import snapshot

CHAIN = [
    ("A red car is left of the tree.", "The car is blue, not red. Please revise.", ["attribute"]),
    ("A blue car is left of the tree.", "No further corrections needed.", []),
]


def make_trajectory(
    image, *, question="What is left of the tree?", chain=CHAIN, model="tiny-llava",
    rm="tiny-rm", **fields,
) -> Trajectory:  # fmt: skip
    """A generated trajectory with its steps and a creation row in its history."""
    trajectory = Trajectory.objects.create(
        dataset_id=image.dataset_id, image=image, question=question, model_id=model, rm_id=rm,
        **fields,
    )  # fmt: skip
    TrajectoryStep.objects.bulk_create(
        TrajectoryStep(
            trajectory=trajectory, k=k, response=response, feedback=feedback,
            response_by=model, feedback_by=rm, error_types=errors, m_latency_ms=10.0 + k,
        )
        for k, (response, feedback, errors) in enumerate(chain)
    )  # fmt: skip
    TrajectoryChange.objects.create(
        trajectory=trajectory, action="create", version=1, after=snapshot(trajectory)
    )
    return trajectory
