"""Importing trajectories from JSONL in the FORMATS.md SFT shape."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.catalog.factories import ImageFactory
from webapp.core.importing.report import ImportFailed
from webapp.trajectories.importing import import_trajectories
from webapp.trajectories.models import Trajectory, TrajectoryChange

pytestmark = pytest.mark.django_db


def sft(trajectory, step, image, response, feedback, target, errors=(), **extra):
    return {
        "id": f"{trajectory}-{step}", "trajectory": trajectory, "step": step, "image": image,
        "question": "What is left of the tree?", "response": response, "feedback": feedback,
        "target": target, "error_types": list(errors), **extra,
    }  # fmt: skip


def write(tmp_path, rows, name="sft.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def good_rows(image):
    ImageFactory(dataset=image.dataset, file_name="street/0002.png")
    return [
        # Lines out of order: the import orders by step.
        sft("t1", 1, image.sha256, "A blue car left of a tree.", "Left of the tree, yes.",
            "A blue car is left of the tree.", ["spatial"]),
        sft("t1", 0, image.sha256, "A red car is left of the tree.", "The car is blue.",
            "A blue car left of a tree.", ["attribute"]),
        sft("t2", 0, "street/0002.png", "Two dogs.", "No further corrections needed.", None,
            status="approved", final_answer="Two dogs.", seeded_error="object"),
    ]  # fmt: skip


def test_a_good_file_becomes_trajectories_with_steps_and_history(tmp_path, dataset, good_rows):
    report = import_trajectories(dataset=dataset.name, file=write(tmp_path, good_rows))
    assert report.errors == []
    assert report.notes == {
        "trajectories new": 2, "trajectories already there": 0, "steps new": 4,
    }  # fmt: skip
    t1 = Trajectory.objects.get(source_key="import:t1")
    steps = list(t1.steps.order_by("k").values_list("k", "response", "feedback", "error_types"))
    assert steps == [
        (0, "A red car is left of the tree.", "The car is blue.", ["attribute"]),
        (1, "A blue car left of a tree.", "Left of the tree, yes.", ["spatial"]),
        # The last target, different from the last answer, is one more answer A_2.
        (2, "A blue car is left of the tree.", "", []),
    ]
    assert t1.final_answer == "A blue car is left of the tree."
    assert t1.status == "in_review" and t1.run_id == report.run_id
    t2 = Trajectory.objects.get(source_key="import:t2")
    assert t2.image.file_name == "street/0002.png"
    assert (t2.status, t2.final_answer, t2.seeded_error) == ("approved", "Two dogs.", "object")
    assert t2.steps.count() == 1
    created = TrajectoryChange.objects.get(trajectory=t1)
    assert created.action == "create" and len(created.after["steps"]) == 3


def test_importing_the_same_file_again_creates_no_duplicates(tmp_path, dataset, good_rows):
    path = write(tmp_path, good_rows)
    import_trajectories(dataset=dataset.name, file=path)
    again = import_trajectories(dataset=dataset.name, file=path)
    assert again.notes["trajectories new"] == 0
    assert again.notes["trajectories already there"] == 2
    assert Trajectory.objects.count() == 2 and TrajectoryChange.objects.count() == 2


def bad_file(tmp_path, image):
    sha = image.sha256
    return write(tmp_path, [
        sft("ok", 0, sha, "A car.", "Fine.", "A car."),
        "{not json",
        sft("t3", 0, sha, "A car.", "F.", "B.", ["colour"]),
        sft("t4", 0, sha, "", "F.", "B."),
        sft("t5", 0, sha, "A.", "F.", "B."),
        sft("t5", 2, sha, "C.", "F.", "D."),
        sft("t6", 0, "0" * 64, "A.", "F.", "B."),
        sft("t7", 0, sha, "A.", "F.", "B."),
        {**sft("t7", 1, sha, "B.", "F.", "C."), "question": "Another question?"},
        sft("t8", 0, sha, "A.", "F.", None, status="approved"),
        {**sft("t9", 0, sha, "A.", "F.", "B."), "step": "0"},
    ])  # fmt: skip


def test_bad_lines_are_reported_by_line_and_field_and_abort_writes_nothing(
    tmp_path, dataset, image
):
    path = bad_file(tmp_path, image)
    with pytest.raises(ImportFailed) as caught:
        import_trajectories(dataset=dataset.name, file=path)
    errors = [str(e) for e in caught.value.report.errors]
    # Long lines on purpose: each is exactly what a curator reads.
    expected = [
        f"{path}: line 2: invalid JSON at column 2: Expecting property name enclosed in double quotes",  # noqa: E501
        f"{path}: line 3: error_types: unknown error type 'colour'; expected any of object, attribute, spatial, reasoning",  # noqa: E501
        f"{path}: line 4: response: is empty",
        f"{path}: line 5 (trajectory 't5'): step: steps must run 0..n-1; missing 1",
        f"{path}: line 7: image: no image '{'0' * 64}' in dataset 'street' (looked up by sha256, file name and uri)",  # noqa: E501
        f"{path}: line 9: question: differs from line 8 of trajectory 't7'",
        f"{path}: line 10 (trajectory 't8'): status: an approved trajectory needs a final answer (final_answer, or a last target)",  # noqa: E501
        f"{path}: line 11: step: expected a step number 0, 1, 2, ..., got '0'",
    ]  # fmt: skip
    assert errors == expected
    assert Trajectory.objects.count() == 0


def test_skip_imports_the_good_trajectories_and_leaves_out_the_bad_ones(tmp_path, dataset, image):
    report = import_trajectories(
        dataset=dataset.name, file=bad_file(tmp_path, image), on_error="skip"
    )
    assert list(Trajectory.objects.values_list("source_key", flat=True)) == ["import:ok"]
    assert report.skipped_records == 7 and len(report.errors) == 8


def test_a_missing_dataset_or_file_is_a_clear_error(tmp_path, dataset):
    with pytest.raises(ImportFailed, match="no dataset named 'nope'"):
        import_trajectories(dataset="nope", file=tmp_path / "x.jsonl")
    with pytest.raises(ImportFailed, match="file not found"):
        import_trajectories(dataset=dataset.name, file=tmp_path / "x.jsonl")


def test_the_command_imports_and_prints_a_summary(tmp_path, dataset, good_rows, image):
    out, err = StringIO(), StringIO()
    path = write(tmp_path, good_rows)
    call_command("import_trajectories", str(path), dataset=dataset.name, stdout=out, stderr=err)
    assert "trajectories new: 2" in out.getvalue()
    with pytest.raises(CommandError, match="failed with 8 errors; nothing was written"):
        call_command(
            "import_trajectories", str(bad_file(tmp_path, image)), dataset=dataset.name,
            stdout=out, stderr=err,
        )  # fmt: skip
    assert "line 4: response: is empty" in err.getvalue()
