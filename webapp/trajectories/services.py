"""Writes to trajectories. Every human change goes through here so history and versions stay whole.

A trajectory and its steps are one document with one ``version`` (``Trajectory.version``).
``update_trajectory`` applies a set of changes through ``webapp.core.versioning`` exactly as
region review does: a stale version raises ``TrajectoryConflict`` and nothing is written; a good
one writes the trajectory row, its steps and one ``TrajectoryChange`` (the whole document before
and after) in one transaction. The queue hands out trajectories with ``webapp.core.leases``.

Changes (``update_trajectory(changes=...)``), each key optional:

- ``question``, ``final_answer``: new text;
- ``status``: generated, in_review, approved or rejected (approving needs a final answer);
- ``edit_steps``: ``{k: {"response": ..., "feedback": ..., "error_types": [...]}}``;
- ``remove_step``: the ``k`` of a step to remove;
- ``add_step``: ``{"at": k or None (the end), "response": ..., "feedback": ..., ...}``;
- ``steps``: the whole list of steps, replacing the current one (restore uses it).

They apply in that order; afterwards the steps are renumbered 0..n-1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch, QuerySet

from training.formats import ERROR_TYPES
from webapp.core import leases
from webapp.core.versioning import Conflict, versioned_update
from webapp.trajectories.models import (
    Trajectory,
    TrajectoryChange,
    TrajectoryLease,
    TrajectoryStep,
)
from webapp.trajectories.queue import QueueFilters, candidate_trajectories

EDITABLE = frozenset(
    {"question", "final_answer", "status", "edit_steps", "remove_step", "add_step", "steps"}
)
STEP_FIELDS = frozenset({"response", "feedback", "error_types"})
# A restore or a full replacement may also carry who wrote each text.
STEP_REPLACE_FIELDS = STEP_FIELDS | {"response_by", "feedback_by"}
# The statuses of trajectories still waiting for people: the editor queue offers these.
OPEN_STATUSES = (Trajectory.Status.GENERATED, Trajectory.Status.IN_REVIEW)


class TrajectoryConflict(Conflict):
    """The trajectory moved on since the writer read it; ``current`` is what it is now."""

    def __str__(self) -> str:
        if self.current is None:
            return "the trajectory no longer exists"
        return f"the trajectory is at version {self.current['version']}"


# --- The document -------------------------------------------------------------------------------


def step_snapshot(step: TrajectoryStep) -> dict[str, Any]:
    return {
        "k": step.k,
        "response": step.response,
        "feedback": step.feedback,
        "response_by": step.response_by,
        "feedback_by": step.feedback_by,
        "error_types": list(step.error_types or []),
    }


def snapshot(trajectory: Trajectory, steps: Iterable[TrajectoryStep] | None = None) -> dict:
    """The whole document as history keeps it: question, answers, status, steps, version.

    ``steps`` saves the query when the caller already holds them (in ``k`` order).
    """
    if steps is None:
        steps = TrajectoryStep.objects.filter(trajectory_id=trajectory.pk).order_by("k")
    return document(trajectory, [step_snapshot(step) for step in steps])


def document(trajectory: Trajectory, steps: list[dict]) -> dict:
    """The history form of a trajectory whose steps are already ``step_snapshot`` dicts."""
    return {
        "id": trajectory.pk,
        "question": trajectory.question,
        "final_answer": trajectory.final_answer,
        "status": trajectory.status,
        "version": trajectory.version,
        "steps": steps,
    }


def author(user) -> str:
    """How a step records a person as the writer of a text (``user:<name>``)."""
    return f"user:{user.get_username()}" if user is not None else ""


# --- Validation ---------------------------------------------------------------------------------


def clean_error_types(value: Any, where: str) -> list[str]:
    """A list of FORMATS.md error types, deduplicated, in the canonical order."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: error_types must be a list of names")
    unknown = sorted(set(value) - set(ERROR_TYPES))
    if unknown:
        raise ValueError(
            f"{where}: unknown error type {', '.join(map(repr, unknown))}; "
            f"expected any of {', '.join(ERROR_TYPES)}"
        )
    return [name for name in ERROR_TYPES if name in value]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be text")
    if "\x00" in value:
        raise ValueError(f"{where} contains a NUL character")
    return value.strip()


def _step_index(value: Any, steps: list[dict], where: str) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a step number") from None
    if not 0 <= k < len(steps):
        raise ValueError(f"{where}: there is no step {k} (steps are 0..{len(steps) - 1})")
    return k


@dataclass
class _Draft:
    """The document being changed: the trajectory's columns and its steps as dicts."""

    columns: dict[str, Any] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    steps_changed: bool = False


def _apply_step_fields(step: dict, fields: dict, where: str, user) -> None:
    unknown = set(fields) - STEP_FIELDS
    if unknown:
        raise ValueError(f"{where}: fields that cannot be edited: {', '.join(sorted(unknown))}")
    if "response" in fields:
        text = _text(fields["response"], f"{where} response")
        if text != step["response"]:
            step["response"], step["response_by"] = text, author(user)
    if "feedback" in fields:
        text = _text(fields["feedback"], f"{where} feedback")
        if text != step["feedback"]:
            step["feedback"], step["feedback_by"] = text, author(user)
    if "error_types" in fields:
        step["error_types"] = clean_error_types(fields["error_types"], where)


def _new_step(fields: dict, where: str, user) -> dict:
    step = {"response": "", "feedback": "", "response_by": "", "feedback_by": "", "error_types": []}
    _apply_step_fields(step, fields, where, user)
    return step


def _replacement_steps(value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise ValueError("steps must be a list")
    out = []
    for i, item in enumerate(value):
        where = f"steps[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        step = {
            "response": _text(item.get("response", ""), f"{where} response"),
            "feedback": _text(item.get("feedback", ""), f"{where} feedback"),
            "response_by": str(item.get("response_by", ""))[:255],
            "feedback_by": str(item.get("feedback_by", ""))[:255],
            "error_types": clean_error_types(item.get("error_types", []), where),
        }
        # Latencies are facts of the generation run; a restore keeps them where the step stays.
        if "id" in item:
            step["id"] = item["id"]
        out.append(step)
    return out


def _draft(trajectory: Trajectory, current: list[TrajectoryStep], changes: dict, user) -> _Draft:
    """Apply ``changes`` to the locked document in memory, validating as it goes."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(f"fields that cannot be edited: {', '.join(sorted(unknown))}")
    draft = _Draft(steps=[{**step_snapshot(s), "id": s.pk} for s in current])
    if "question" in changes:
        question = _text(changes["question"], "question")
        if not question:
            raise ValueError("question: a trajectory needs a question")
        draft.columns["question"] = question
    if "final_answer" in changes:
        draft.columns["final_answer"] = _text(changes["final_answer"], "final_answer")
    if "status" in changes:
        if changes["status"] not in Trajectory.Status.values:
            raise ValueError(
                f"status: unknown status {changes['status']!r}; "
                f"expected one of {', '.join(Trajectory.Status.values)}"
            )
        draft.columns["status"] = changes["status"]
    before = [dict(step) for step in draft.steps]
    if "steps" in changes:
        draft.steps = _replacement_steps(changes["steps"])
    for key, fields in (changes.get("edit_steps") or {}).items():
        k = _step_index(key, draft.steps, "edit_steps")
        if not isinstance(fields, dict):
            raise ValueError(f"step {k}: the edit must be an object of fields")
        _apply_step_fields(draft.steps[k], fields, f"step {k}", user)
    if changes.get("remove_step") is not None:
        k = _step_index(changes["remove_step"], draft.steps, "remove_step")
        del draft.steps[k]
    if changes.get("add_step") is not None:
        fields = dict(changes["add_step"])
        at = fields.pop("at", None)
        at = len(draft.steps) if at in (None, "") else int(at)
        if not 0 <= at <= len(draft.steps):
            raise ValueError(f"add_step: cannot insert at {at} (0..{len(draft.steps)})")
        draft.steps.insert(at, _new_step(fields, f"new step {at}", user))
    for k, step in enumerate(draft.steps):
        if not step["response"]:
            raise ValueError(f"step {k}: the response A_{k} is empty")
    if not draft.steps:
        raise ValueError("steps: a trajectory keeps at least its first answer A_0")
    draft.steps_changed = [_comparable(s) for s in draft.steps] != [_comparable(s) for s in before]
    status = draft.columns.get("status", trajectory.status)
    final = draft.columns.get("final_answer", trajectory.final_answer)
    if status == Trajectory.Status.APPROVED and not final:
        raise ValueError("final_answer: set the final answer before approving")
    # A person starting on a generated trajectory takes it into review.
    if "status" not in changes and trajectory.status == Trajectory.Status.GENERATED:
        draft.columns["status"] = Trajectory.Status.IN_REVIEW
    return draft


def _comparable(step: dict) -> tuple:
    return (
        step.get("id"),
        step["response"],
        step["feedback"],
        step["response_by"],
        step["feedback_by"],
        tuple(step["error_types"]),
    )


def _write_steps(trajectory: Trajectory, current: list[TrajectoryStep], steps: list[dict]) -> None:
    """Store ``steps`` as 0..n-1. Kept steps keep their id (and their latencies).

    The unique (trajectory, k) rule makes renumbering in place awkward, so the old rows go and
    the list is inserted again in one bulk insert: two queries, whatever the number of steps.
    """
    by_id = {step.pk: step for step in current}
    # A whole replacement (a restore) carries no ids: a step whose answer is the one already at
    # its place is the same step, and keeps its id and latencies.
    replacing = not any("id" in step for step in steps)
    rows = []
    for k, step in enumerate(steps):
        old = by_id.get(step.get("id"))
        if replacing and k < len(current) and current[k].response == step["response"]:
            old = current[k]
        rows.append(
            TrajectoryStep(
                pk=old.pk if old else None,
                trajectory_id=trajectory.pk,
                k=k,
                response=step["response"],
                feedback=step["feedback"],
                response_by=step["response_by"],
                feedback_by=step["feedback_by"],
                error_types=step["error_types"],
                m_latency_ms=old.m_latency_ms if old else None,
                rm_latency_ms=old.rm_latency_ms if old else None,
            )
        )
    TrajectoryStep.objects.filter(trajectory_id=trajectory.pk).delete()
    TrajectoryStep.objects.bulk_create(rows)


# --- Writes -------------------------------------------------------------------------------------


def update_trajectory(
    *, trajectory_id: int, expected_version: int, changes: dict[str, Any], user=None
) -> Trajectory:
    """Apply ``changes`` if the trajectory is still at ``expected_version``; record the change.

    Raises ``TrajectoryConflict`` when the version moved (or the trajectory is gone) and
    ``ValueError`` naming the field for bad input; nothing is written in either case.
    """

    def columns(row: Trajectory) -> dict[str, Any]:
        current = list(TrajectoryStep.objects.filter(trajectory_id=row.pk).order_by("k"))
        draft = _draft(row, current, changes, user)
        if draft.steps_changed:
            _write_steps(row, current, draft.steps)
        return draft.columns

    def record(row: Trajectory, before: dict, after: dict) -> None:
        TrajectoryChange.objects.create(
            trajectory=row,
            action=TrajectoryChange.Action.UPDATE,
            version=row.version,
            user=user,
            before=before,
            after=after,
        )

    return versioned_update(
        Trajectory,
        pk=trajectory_id,
        expected_version=expected_version,
        snapshot=snapshot,
        columns=columns,
        record=record,
        user=user,
        conflict=TrajectoryConflict,
    )


def restore_version(
    *, change_id: int, expected_version: int, user=None
) -> tuple[Trajectory, TrajectoryChange]:
    """Bring a trajectory back to the state right after an earlier change, as a new version."""
    change = TrajectoryChange.objects.get(pk=change_id)
    state = change.after
    if not state:
        raise ValueError("that change left no state to restore")
    steps = [dict(step) for step in state.get("steps", [])]
    trajectory = update_trajectory(
        trajectory_id=change.trajectory_id,
        expected_version=expected_version,
        changes={
            "question": state["question"],
            "final_answer": state.get("final_answer", ""),
            "status": state["status"],
            "steps": steps,
        },
        user=user,
    )
    return trajectory, trajectory.changes.order_by("pk").last()


def record_creation(trajectory: Trajectory, *, user=None, run=None) -> TrajectoryChange:
    """The history row of a trajectory just created (by an import or by a person)."""
    return TrajectoryChange.objects.create(
        trajectory=trajectory,
        action=TrajectoryChange.Action.CREATE,
        version=trajectory.version,
        user=user,
        run=run,
        after=snapshot(trajectory),
    )


def load_document(trajectory_id: int, *, within: QuerySet[Trajectory] | None = None) -> Trajectory:
    """The trajectory with image, dataset, run and steps: three queries (one for the steps).

    ``within`` narrows where it is looked for (the trajectories a user may open)."""
    return (
        (Trajectory.objects.all() if within is None else within)
        .select_related("image", "dataset", "run", "updated_by")
        .prefetch_related(Prefetch("steps", queryset=TrajectoryStep.objects.order_by("k")))
        .get(pk=trajectory_id)
    )


# --- Leases (the shared machinery of webapp.core.leases) -----------------------------------------


def claim_next(
    *, dataset_id: int, user, filters: QueueFilters | None = None, exclude: Iterable[int] = ()
) -> int | None:
    """Lease the next open trajectory of the dataset to ``user``; its id, or None when none.

    The user's other trajectory leases in the dataset are given back: one at a time.
    """
    filters = filters or QueueFilters()

    def candidates(now, excluded: set[int]) -> list[int]:
        return candidate_trajectories(
            dataset_id, filters, user_id=user.pk, now=now, exclude=excluded,
            limit=leases.CLAIM_BATCH,
        )  # fmt: skip

    return leases.claim_next(
        TrajectoryLease,
        key_field="trajectory_id",
        candidates=candidates,
        user=user,
        scope={"dataset_id": dataset_id},
        exclude=exclude,
    )


def renew_lease(*, trajectory_id: int, user) -> bool:
    """Extend the user's live lease (each saved action does); False if it is not theirs."""
    return leases.renew(TrajectoryLease, key={"trajectory_id": trajectory_id}, user=user)


def release_lease(*, trajectory_id: int, user) -> bool:
    """Give the trajectory back to the pool (only the holder can)."""
    return leases.release(TrajectoryLease, key={"trajectory_id": trajectory_id}, user=user)


__all__ = [
    "OPEN_STATUSES",
    "TrajectoryConflict",
    "claim_next",
    "load_document",
    "record_creation",
    "release_lease",
    "renew_lease",
    "restore_version",
    "snapshot",
    "update_trajectory",
]
