"""Stage-2 files of a version: approved correction trajectories, read back by ``training/``."""

from __future__ import annotations

import doctest
import io
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.exports.conftest import make_trajectory
from training.data import stage2_rows as stage2
from training.data.version import DatasetVersion as VersionReader
from training.data.version import key_in_holdout
from training.formats import STOP_PHRASE
from training.stage2.prompts import evidence_text
from webapp.regions.models import Region
from webapp.trajectories.models import TrajectoryStep

pytestmark = pytest.mark.django_db


def cut(out: Path, *args: str) -> Path:
    stdout = io.StringIO()
    call_command("export_version", *args, "--out", str(out), stdout=stdout, stderr=io.StringIO())
    return Path(stdout.getvalue().strip())


def evidence_of(image) -> str:
    rows = Region.objects.filter(image=image, status="accepted", flagged=False).order_by("id")
    return evidence_text(
        [{"box": [r.x0, r.y0, r.x1, r.y1], "phrase": r.phrase, "caption": r.caption} for r in rows]
    )


def test_the_reader_gets_exactly_the_approved_trajectories_unchanged(trajectories, tmp_path):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street"), verify=True)
    accepted, corrected = trajectories["accepted"], trajectories["corrected"]
    image_a, image_c = accepted.image.sha256, corrected.image.sha256

    sft = list(version.stage2("sft"))
    in_image_order = sorted([(image_a, accepted.pk), (image_c, corrected.pk)])
    assert [(r["trajectory"], r["step"]) for r in sft] == [(t, 0) for _, t in in_image_order]
    by_trajectory = {r["trajectory"]: r for r in sft}
    assert by_trajectory[accepted.pk] == {
        "id": f"{accepted.pk}-0", "trajectory": accepted.pk, "step": 0, "image": image_a,
        "question": "Where is the car?", "response": "The car is right of the tree.",
        "feedback": "The car is left of the tree.", "target": "The car is left of the tree.",
        "error_types": ["spatial"],
    }  # fmt: skip
    assert by_trajectory[corrected.pk]["target"] == "The car is red."
    assert by_trajectory[corrected.pk]["error_types"] == ["attribute"]

    rm = {(r["trajectory"], r["step"]): r for r in version.stage2("rm")}
    assert set(rm) == {(accepted.pk, 0), (accepted.pk, 1), (corrected.pk, 0), (corrected.pk, 1)}
    assert rm[(accepted.pk, 0)]["feedback"] == "The car is left of the tree."
    assert rm[(accepted.pk, 1)]["feedback"] == STOP_PHRASE
    # The annotator's answer is the final step, with the stop phrase the RM must learn.
    assert rm[(corrected.pk, 1)]["response"] == "The car is red."
    assert rm[(corrected.pk, 1)]["feedback"] == STOP_PHRASE
    assert rm[(accepted.pk, 0)]["evidence"] == evidence_of(accepted.image)
    assert rm[(accepted.pk, 0)]["evidence"].split("\n")[:2] == [
        "car 0 [1.5, 2, 30.2, 40]: a red car number 0",
        "tree [10, 5, 60, 47]: a tall tree",
    ]
    assert "flagged" not in rm[(accepted.pk, 0)]["evidence"]
    assert "pending thing" not in rm[(accepted.pk, 0)]["evidence"]

    llava = {c["id"]: c for c in version.llava_conversations()}
    assert set(llava) == {f"trajectory-{accepted.pk}", f"trajectory-{corrected.pk}"}
    assert llava[f"trajectory-{accepted.pk}"] == {
        "id": f"trajectory-{accepted.pk}",
        "image": image_a,
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is the car?"},
            {"from": "gpt", "value": "The car is right of the tree."},
            {"from": "human", "value": "Feedback: The car is left of the tree."},
            {"from": "gpt", "value": "The car is left of the tree."},
        ],
    }
    # Embedded mode: every row's image is readable from the version, bytes as stored.
    assert version.image_bytes(by_trajectory[corrected.pk]).startswith(b"\x89PNG")
    counts = version.manifest["counts"]
    assert (counts["sft"], counts["rm"], counts["llava"]) == (2, 4, 2)
    assert image_c in {r["image"] for r in version.stage2("rm")}


def test_without_the_approved_only_filter_all_but_rejected_trajectories_go_in(
    trajectories, tmp_path
):
    reader = VersionReader.open(cut(tmp_path, "--dataset", "street", "--unapproved-trajectories"))
    sft = {r["trajectory"]: r for r in reader.stage2("sft")}
    unreviewed = trajectories["unreviewed"]
    assert trajectories["rejected"].pk not in sft
    assert sft[unreviewed.pk]["target"] == "Yes, a tall tree."
    rm = [r for r in reader.stage2("rm") if r["trajectory"] == unreviewed.pk]
    # Not approved: no stop phrase is made up for it, and its step without feedback is no row.
    assert [(r["step"], r["feedback"]) for r in rm] == [(0, "There is a tall tree.")]


def test_reference_mode_rows_carry_the_image_uri(trajectories, tmp_path):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street", "--reference"))
    rows = list(version.stage2("sft")) + list(version.stage2("rm"))
    rows += version.llava_conversations()
    assert rows and all(r["uri"].startswith("file://") for r in rows)
    assert version.image_bytes(rows[0]).startswith(b"\x89PNG")


def test_held_out_images_never_enter_stage2_and_their_questions_are_evaluation_items(
    trajectories, tmp_path
):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street", "--holdout", "0.5"))
    stage2_images = {r["image"] for name in ("sft", "rm") for r in version.stage2(name)}
    stage2_images |= {c["image"] for c in version.llava_conversations()}
    held = {
        t.image.sha256: t
        for t in (trajectories["accepted"], trajectories["corrected"])
        if key_in_holdout(t.image.sha256, 0.5)
    }
    assert not (stage2_images & set(held))
    kept = {t.image.sha256 for t in (trajectories["accepted"], trajectories["corrected"])}
    assert stage2_images == kept - set(held)
    questions = {r["question"] for r in version.eval_items() if r.get("trajectory")}
    assert questions == {t.question for t in held.values()}


def test_the_hash_is_the_same_for_the_same_trajectories_and_follows_an_edit(trajectories, tmp_path):
    first = VersionReader.open(cut(tmp_path / "one", "--dataset", "street", "--reference"))
    second = VersionReader.open(cut(tmp_path / "two", "--dataset", "street", "--reference"))
    assert first.manifest["content_sha256"] == second.manifest["content_sha256"]
    accepted = trajectories["accepted"]
    TrajectoryStep.objects.filter(trajectory=accepted, k=0).update(feedback="It is on the left.")
    third = VersionReader.open(cut(tmp_path / "three", "--dataset", "street", "--reference"))
    assert third.manifest["content_sha256"] != first.manifest["content_sha256"]
    assert "It is on the left." in (third.root / "stage2" / "sft.jsonl").read_text()


def test_trajectories_alone_are_a_selection(media_root, tmp_path):
    from tests.catalog.factories import DatasetFactory, stored_image

    image = stored_image(DatasetFactory(name="qa"))
    make_trajectory(image, "Q?", [("A.", STOP_PHRASE, [])], status="approved", final="A.")
    version = VersionReader.open(cut(tmp_path, "--dataset", "qa"))
    assert [r["feedback"] for r in version.stage2("rm")] == [STOP_PHRASE]
    assert list(version.stage2("sft")) == []  # nothing was corrected
    assert version.image_bytes(next(version.stage2("rm"))).startswith(b"\x89PNG")


def test_the_row_rules_hold_their_examples():
    assert doctest.testmod(stage2).failed == 0


def test_the_command_line_shows_progress_by_phase(trajectories, tmp_path):
    stderr = io.StringIO()
    call_command(
        "export_version", "--dataset", "street", "--out", str(tmp_path), "--progress",
        stdout=io.StringIO(), stderr=stderr,
    )  # fmt: skip
    text = stderr.getvalue()
    # 16 regions + 8 questions + 2 approved trajectories, all written by the end.
    assert "26/26" in text
    for phase in ("stage1", "publishing"):
        assert phase in text
