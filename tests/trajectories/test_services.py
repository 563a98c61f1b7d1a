"""Editing a trajectory as one versioned document: validation, history, restore, conflicts."""

from __future__ import annotations

import pytest

from webapp.trajectories.models import Trajectory, TrajectoryChange, TrajectoryStep
from webapp.trajectories.services import (
    TrajectoryConflict,
    restore_version,
    snapshot,
    update_trajectory,
)

pytestmark = pytest.mark.django_db


def edit(trajectory, user, version=None, **changes):
    return update_trajectory(
        trajectory_id=trajectory.pk,
        expected_version=version or Trajectory.objects.get(pk=trajectory.pk).version,
        changes=changes,
        user=user,
    )


def responses(trajectory):
    return list(trajectory.steps.order_by("k").values_list("response", flat=True))


def test_an_edit_to_a_step_bumps_the_version_and_records_who_wrote_it(trajectory, annotator):
    updated = edit(
        trajectory, annotator,
        edit_steps={1: {"response": "A blue car is left of the green tree.",
                        "error_types": ["spatial", "object", "spatial"]}},
    )  # fmt: skip
    assert updated.version == 2 and updated.updated_by == annotator
    step = TrajectoryStep.objects.get(trajectory=trajectory, k=1)
    assert step.response == "A blue car is left of the green tree."
    assert step.response_by == "user:ann"
    assert step.feedback_by == "tiny-rm"  # untouched text keeps its author
    assert step.error_types == ["object", "spatial"]  # deduplicated, canonical order
    assert step.m_latency_ms == 11.0  # a generation fact survives the edit
    # Touching a generated trajectory takes it into review.
    assert updated.status == Trajectory.Status.IN_REVIEW


def test_every_change_keeps_the_whole_document_before_and_after(trajectory, annotator):
    before = snapshot(trajectory)
    edit(trajectory, annotator, question="What is right of the tree?")
    change = TrajectoryChange.objects.filter(trajectory=trajectory).order_by("pk").last()
    assert change.action == "update" and change.version == 2 and change.user == annotator
    assert change.before == before
    assert change.after["question"] == "What is right of the tree?"
    assert change.after["steps"] == before["steps"]


def test_a_stale_version_is_a_conflict_and_writes_nothing(trajectory, annotator, curator):
    edit(trajectory, curator, final_answer="A blue car.")
    with pytest.raises(TrajectoryConflict) as caught:
        edit(trajectory, annotator, version=1, final_answer="Mine.")
    assert caught.value.current["version"] == 2
    assert caught.value.current["final_answer"] == "A blue car."
    assert Trajectory.objects.get(pk=trajectory.pk).final_answer == "A blue car."
    assert TrajectoryChange.objects.filter(trajectory=trajectory).count() == 2


def test_adding_and_removing_steps_renumbers_them(trajectory, annotator):
    edit(trajectory, annotator, add_step={"at": 1, "response": "A car is left of a tree."})
    assert responses(trajectory) == [
        "A red car is left of the tree.",
        "A car is left of a tree.",
        "A blue car is left of the tree.",
    ]
    assert list(trajectory.steps.order_by("k").values_list("k", flat=True)) == [0, 1, 2]
    assert trajectory.steps.get(k=1).response_by == "user:ann"
    edit(trajectory, annotator, remove_step=0)
    assert responses(trajectory) == ["A car is left of a tree.", "A blue car is left of the tree."]
    assert list(trajectory.steps.order_by("k").values_list("k", flat=True)) == [0, 1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": "approved"}, "final_answer: set the final answer before approving"),
        ({"status": "done"}, "status: unknown status 'done'"),
        ({"edit_steps": {0: {"error_types": ["colour"]}}}, "step 0: unknown error type 'colour'"),
        ({"edit_steps": {5: {"response": "x"}}}, "edit_steps: there is no step 5"),
        ({"edit_steps": {0: {"response": "  "}}}, "step 0: the response A_0 is empty"),
        ({"edit_steps": {0: {"score": 1}}}, "step 0: fields that cannot be edited: score"),
        ({"question": ""}, "question: a trajectory needs a question"),
        ({"remove_step": 7}, "remove_step: there is no step 7"),
        ({"image": 3}, "fields that cannot be edited: image"),
    ],
)
def test_bad_changes_are_refused_with_the_field_named(trajectory, annotator, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        edit(trajectory, annotator, **changes)
    fresh = Trajectory.objects.get(pk=trajectory.pk)
    assert fresh.version == 1 and fresh.status == "generated"
    assert responses(trajectory)[0] == "A red car is left of the tree."


def test_the_last_step_cannot_be_removed(image, annotator):
    from tests.trajectories.factories import make_trajectory

    single = make_trajectory(image, chain=[("One answer.", "", [])])
    with pytest.raises(ValueError, match="at least its first answer"):
        edit(single, annotator, remove_step=0)


def test_approving_with_a_final_answer_works(trajectory, annotator):
    updated = edit(trajectory, annotator, final_answer="A blue car.", status="approved")
    assert updated.status == "approved" and updated.final_answer == "A blue car."


def test_restoring_an_earlier_version_is_a_new_change(trajectory, annotator, curator):
    edit(trajectory, annotator, edit_steps={0: {"response": "Changed once."}})
    first_edit = TrajectoryChange.objects.filter(trajectory=trajectory).order_by("pk").last()
    edit(trajectory, curator, remove_step=1, final_answer="Final.")
    created = TrajectoryChange.objects.get(trajectory=trajectory, action="create")

    restored, change = restore_version(change_id=created.pk, expected_version=3, user=curator)
    assert restored.version == 4 and change.version == 4 and change.user == curator
    assert responses(trajectory) == [
        "A red car is left of the tree.",
        "A blue car is left of the tree.",
    ]
    assert restored.final_answer == "" and restored.status == "generated"
    assert trajectory.steps.get(k=0).error_types == ["attribute"]
    # And forward again, to the state after the first edit.
    restore_version(change_id=first_edit.pk, expected_version=4, user=annotator)
    assert responses(trajectory)[0] == "Changed once."
    assert TrajectoryChange.objects.filter(trajectory=trajectory).count() == 5


def test_a_restore_from_a_stale_page_is_a_conflict(trajectory, annotator):
    edit(trajectory, annotator, question="Q2?")
    created = TrajectoryChange.objects.get(trajectory=trajectory, action="create")
    with pytest.raises(TrajectoryConflict):
        restore_version(change_id=created.pk, expected_version=1, user=annotator)


def test_a_restore_keeps_the_latencies_of_steps_it_leaves_as_they_are(trajectory, annotator):
    edit(trajectory, annotator, edit_steps={1: {"response": "Edited."}})
    created = TrajectoryChange.objects.get(trajectory=trajectory, action="create")
    restore_version(change_id=created.pk, expected_version=2, user=annotator)
    latencies = trajectory.steps.order_by("k").values_list("m_latency_ms", flat=True)
    # A_0 never changed; A_1 came back from history as a new row, without a measured latency.
    assert list(latencies) == [10.0, None]
