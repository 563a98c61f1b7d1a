"""Writing what a trajectory run generated: one Trajectory with its steps and its history row.

Called by ``webapp.jobs.trajectories`` inside the batch's finishing transaction, so a batch's
trajectories appear together with its counts, or not at all. Each trajectory has a
``source_key`` made of the run and the question item, unique per image: a batch that runs
again (a redelivered task, a resumed run) finds the trajectories it wrote and writes nothing
twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from training.stage2.loop import Rectification
from webapp.catalog.models import QuestionItem
from webapp.jobs.models import Run
from webapp.trajectories.models import Trajectory, TrajectoryChange, TrajectoryStep
from webapp.trajectories.services import snapshot
from workers.seeded_errors import Injection


@dataclass(frozen=True)
class Generated:
    """One item's result: the question it answers, the loop's steps, the seeded error if any."""

    item: QuestionItem
    rectification: Rectification
    injection: Injection | None = None


def source_key(*, run_id: int, item_id: int) -> str:
    """The idempotency key of the trajectory a run generates for a question item.

    >>> source_key(run_id=7, item_id=42)
    'run:7:question:42'
    """
    return f"run:{run_id}:question:{item_id}"


def existing_keys(*, run_id: int, item_ids: Sequence[int]) -> set[str]:
    """The source keys of trajectories this run already wrote for these items."""
    keys = [source_key(run_id=run_id, item_id=i) for i in item_ids]
    return set(Trajectory.objects.filter(source_key__in=keys).values_list("source_key", flat=True))


def write_generated(*, run: Run, generated: Sequence[Generated]) -> list[Trajectory]:
    """Create the trajectories, steps and CREATE history rows; skip those written already.

    Three bulk inserts whatever the batch size. Step 0 of a seeded trajectory is tagged with
    the injected error type, so the SFT and RM exports carry it without a person's tag.
    Call inside a transaction.
    """
    done = existing_keys(run_id=run.pk, item_ids=[g.item.pk for g in generated])
    todo = [g for g in generated if source_key(run_id=run.pk, item_id=g.item.pk) not in done]
    trajectories = Trajectory.objects.bulk_create(_trajectory(run, g) for g in todo)
    steps_of: dict[int, list[TrajectoryStep]] = {}
    for trajectory, result in zip(trajectories, todo, strict=True):
        steps_of[trajectory.pk] = _steps(trajectory, result)
    TrajectoryStep.objects.bulk_create(s for steps in steps_of.values() for s in steps)
    TrajectoryChange.objects.bulk_create(
        TrajectoryChange(
            trajectory=trajectory,
            action=TrajectoryChange.Action.CREATE,
            version=trajectory.version,
            run=run,
            after=_created(trajectory, steps_of[trajectory.pk], result.injection),
        )
        for trajectory, result in zip(trajectories, todo, strict=True)
    )
    return trajectories


def _created(
    trajectory: Trajectory, steps: list[TrajectoryStep], injection: Injection | None
) -> dict:
    """The CREATE row's document; a seeded trajectory also keeps exactly what was injected
    (the reference, the corrupted A_0 and the change), since the model has no field for it."""
    after = snapshot(trajectory, steps)
    if injection is not None:
        after["seeded"] = {
            "type": injection.error_type,
            "original": injection.original,
            "corrupted": injection.corrupted,
            "detail": injection.detail,
        }
    return after


def _trajectory(run: Run, generated: Generated) -> Trajectory:
    item, result = generated.item, generated.rectification
    return Trajectory(
        dataset_id=run.dataset_id,
        image_id=item.image_id,
        question_item=item,
        question=item.question,
        reference_answer=item.reference or "",
        final_answer=result.final,
        status=Trajectory.Status.GENERATED,
        outcome=result.outcome,
        seeded_error=generated.injection.error_type if generated.injection else "",
        run=run,
        model_id=result.model[:255],
        rm_id=result.rm[:255],
        prompt_versions=dict(result.prompt_versions),
        source_key=source_key(run_id=run.pk, item_id=item.pk),
    )


def _steps(trajectory: Trajectory, generated: Generated) -> list[TrajectoryStep]:
    result, injection = generated.rectification, generated.injection
    steps = []
    for step in result.steps:
        seeded = injection is not None and step.k == 0
        steps.append(
            TrajectoryStep(
                trajectory=trajectory,
                k=step.k,
                response=step.response,
                feedback=step.feedback or "",
                response_by=step.written_by[:255],
                feedback_by=result.rm[:255] if step.feedback is not None else "",
                error_types=[injection.error_type] if seeded and injection else [],
                m_latency_ms=_ms(step.m_latency_s),
                rm_latency_ms=_ms(step.rm_latency_s),
            )
        )
    return steps


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
