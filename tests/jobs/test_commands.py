"""``manage.py pseudo_label`` and ``caption_regions`` without a broker: tasks run in-process."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from webapp.jobs.models import Run
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db(transaction=True)  # commands commit; tasks run on commit


def call(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_pseudo_label_then_caption_regions_with_wait(make_scenes, tiny_detector_dir):
    make_scenes(3, name="cmd")

    out, _ = call(
        "pseudo_label",
        *("--dataset", "cmd", "--model", tiny_detector_dir, "--labels", "dog, red car"),
        *("--box-threshold", "0.4", "--batch-size", "2", "--device", "cpu", "--wait"),
    )

    run = Run.objects.get(kind=Run.Kind.PSEUDO_LABEL)
    assert f"run {run.pk} succeeded: 3 done, 0 failed of 3" in out
    assert run.parameters["labels"] == ["dog", "red car"]
    assert run.parameters["box_threshold"] == 0.4
    regions = Region.objects.filter(run=run).count()
    assert regions > 0

    out, _ = call(
        "caption_regions",
        "--dataset",
        "cmd",
        "--strategy",
        "template",
        "--from-run",
        str(run.pk),
        "--wait",
    )
    caption_run = Run.objects.get(kind=Run.Kind.CAPTION)
    assert f"run {caption_run.pk} succeeded: {regions} done, 0 failed of {regions}" in out
    assert not Region.objects.filter(run=run, caption="").exists()


def test_the_vocabulary_prompt_and_a_failed_run_exit_non_zero(make_scenes, tiny_detector_dir):
    make_scenes(2, name="vocab")

    with pytest.raises(CommandError, match=r"run \d+ failed"):
        call(
            "pseudo_label",
            "--dataset",
            "vocab",
            "--model",
            "/nowhere/model",
            "--prompt-from",
            "vocabulary",
            "--device",
            "cpu",
            "--wait",
        )

    run = Run.objects.get()
    assert run.status == Run.Status.FAILED and run.failed == 2
    assert sorted(run.parameters["labels"]) == ["cat", "dog"]
    assert run.errors and run.errors[0]["id"] is None


def test_bad_options_are_refused_with_a_message(make_scenes, tiny_detector_dir):
    make_scenes(1, name="opts")
    with pytest.raises(CommandError, match="no dataset named 'nope'"):
        call("pseudo_label", "--dataset", "nope", "--labels", "cat")
    with pytest.raises(CommandError, match="box_threshold must be between 0 and 1"):
        call("pseudo_label", "--dataset", "opts", "--labels", "cat", "--box-threshold", "3")
    with pytest.raises(CommandError, match="local strategy needs a model"):
        call("caption_regions", "--dataset", "opts", "--strategy", "local")
    assert not Run.objects.exists()
