"""Pseudo-label runs in eager mode (no broker) with a tiny random Grounding DINO."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.storage import default_storage
from django.db.models import F

from tests.jobs.conftest import region_set
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.pseudo_label import (
    process_pseudo_label_batch,
    selected_images,
    start_pseudo_label_run,
)
from webapp.jobs.services import RunStateError, cancel_run, plan_run, resume_run, retry_failed
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db


def start(run_eagerly, dataset, model, **kwargs):
    options = {"labels": ["dog", "cat", "red car"], "batch_size": 2, "device": "cpu"} | kwargs
    return run_eagerly(start_pseudo_label_run, dataset=dataset, model=model, **options)


def test_a_run_proposes_regions_on_every_image_and_records_its_parameters(
    make_scenes, tiny_detector_dir, run_eagerly
):
    dataset = make_scenes(5)

    run = start(run_eagerly, dataset, tiny_detector_dir, box_threshold=0.3, text_threshold=0.2)

    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 5, 5, 0)
    assert run.parameters | {"labels": None} == {
        "prompt_mode": "labels",
        "labels": None,
        "box_threshold": 0.3,
        "text_threshold": 0.2,
        "nms_iou": 0.5,
        "batch_size": 2,
        "device": "cpu",
        "dtype": "auto",
        "backend": "transformers",
        "image_filter": {},
    }
    assert run.parameters["labels"] == ["dog", "cat", "red car"]
    assert run.model_id == tiny_detector_dir
    assert [b.size for b in run.batches.order_by("index")] == [2, 2, 1]
    assert set(run.batches.values_list("status", flat=True)) == {RunBatch.Status.DONE}
    regions = Region.objects.filter(run=run)
    assert regions.count() == run.summary["regions"] > 0
    assert set(regions.values_list("image__dataset", flat=True)) == {dataset.pk}
    assert set(regions.values_list("origin", "status")) == {("detector", "pending")}
    assert set(regions.values_list("phrase", flat=True)) <= {"dog", "cat", "red car"}
    for region in regions:
        assert region.score >= 0.3
        assert 0 <= region.x0 < region.x1 <= region.image_width
        assert 0 <= region.y0 < region.y1 <= region.image_height
        assert region.source_key.startswith(f"run:{run.pk}:{region.image_id}:")
    assert run.items_per_second > 0 and run.eta_s is None


def test_running_a_batch_again_adds_no_region_and_counts_nothing_twice(
    make_scenes, tiny_detector_dir, run_eagerly
):
    dataset = make_scenes(4)
    run = start(run_eagerly, dataset, tiny_detector_dir)
    before = region_set(run)
    count = Region.objects.filter(run=run).count()
    batch = run.batches.get(index=0)

    # As if its worker died while it ran (claimed, not finished) after writing its regions:
    # the redelivered batch runs again over regions that are already there.
    RunBatch.objects.filter(pk=batch.pk).update(status=RunBatch.Status.RUNNING)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, finished_at=None, done=F("done") - batch.done
    )
    run_eagerly(process_pseudo_label_batch, batch_id=batch.pk)
    # ... and a redelivery after it finished does nothing at all.
    assert process_pseudo_label_batch(batch_id=batch.pk) is None

    run.refresh_from_db()
    assert Region.objects.filter(run=run).count() == count
    assert region_set(run) == before
    assert (run.done, run.failed, run.total) == (4, 0, 4)
    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == (RunBatch.Status.DONE, 2)


def test_a_batch_rerun_while_its_first_attempt_finishes_counts_once(
    make_scenes, tiny_detector_dir, run_eagerly
):
    """Two attempts of the same batch: the one that does not own it any more writes nothing."""
    dataset = make_scenes(2)
    run = start(run_eagerly, dataset, tiny_detector_dir, batch_size=2)
    batch = run.batches.get()
    Region.objects.filter(run=run).delete()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, done=0, finished_at=None)
    RunBatch.objects.filter(pk=batch.pk).update(status=RunBatch.Status.RUNNING, attempts=5)

    # A stale attempt (attempt 5 was claimed by someone else after it) cannot finish it.
    from webapp.jobs.services import BatchOutcome, finish_batch

    batch.attempts = 4
    wrote = []
    assert not finish_batch(batch, BatchOutcome(done=2), write=lambda: wrote.append(1), seconds=0)
    assert wrote == []
    run.refresh_from_db()
    assert run.done == 0


def test_the_vocabulary_prompt_uses_the_datasets_ground_truth_phrases(
    make_scenes, tiny_detector_dir, run_eagerly
):
    dataset = make_scenes(3)  # gt phrases: dog, cat, red car

    run = start(run_eagerly, dataset, tiny_detector_dir, labels=None, prompt_mode="vocabulary")

    assert sorted(run.parameters["labels"]) == ["cat", "dog", "red car"]
    assert run.status == Run.Status.SUCCEEDED
    assert set(Region.objects.filter(run=run).values_list("phrase", flat=True)) <= {
        "cat",
        "dog",
        "red car",
    }


def test_the_caption_prompt_looks_for_noun_phrases_of_each_images_caption(
    make_scenes, tiny_detector_dir, run_eagerly
):
    dataset = make_scenes(2)  # "a brown dog next to a red car ...", "two cats sitting on ..."

    run = start(run_eagerly, dataset, tiny_detector_dir, labels=None, prompt_mode="caption")

    assert run.status == Run.Status.SUCCEEDED and run.parameters["labels"] == []
    first, second = dataset.images.order_by("pk")
    phrases_first = set(
        Region.objects.filter(run=run, image=first).values_list("phrase", flat=True)
    )
    phrases_second = set(
        Region.objects.filter(run=run, image=second).values_list("phrase", flat=True)
    )
    assert phrases_first and phrases_second
    assert all(p in first.caption for p in phrases_first)
    assert all(p in second.caption for p in phrases_second)


def test_an_unreadable_image_is_a_failed_item_with_its_reason_and_can_be_retried(
    make_scenes, tiny_detector_dir, run_eagerly
):
    dataset = make_scenes(4)
    broken = dataset.images.order_by("pk")[1]
    saved = default_storage.open(broken.storage_path, "rb").read()
    default_storage.delete(broken.storage_path)

    run = start(run_eagerly, dataset, tiny_detector_dir)

    assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 3, 1)
    assert run.errors[0]["id"] == broken.pk and "does not exist" in run.errors[0]["error"]
    assert not Region.objects.filter(run=run, image=broken).exists()

    default_storage.save(broken.storage_path, io.BytesIO(saved))
    assert run_eagerly(retry_failed, run=run) == 1

    run.refresh_from_db()
    assert (run.status, run.done, run.failed, run.errors) == (Run.Status.SUCCEEDED, 4, 0, [])
    assert Region.objects.filter(run=run, image=broken).exists()
    assert run.batches.count() == 3  # two batches of two, and the retry's batch of one


def test_a_cancelled_run_stops_handing_out_batches_and_resume_finishes_it_exactly(
    make_scenes, tiny_detector_dir, run_eagerly, settings, django_capture_on_commit_callbacks
):
    dataset = make_scenes(6)
    reference = start(run_eagerly, dataset, tiny_detector_dir)
    settings.FGAM_RUN_WINDOW = 1  # one batch in flight at a time
    run = start_pseudo_label_run(
        dataset=dataset, model=tiny_detector_dir, labels=["dog", "cat", "red car"], batch_size=2
    )  # queued; its planning waits for the commit, which never comes in this test
    with django_capture_on_commit_callbacks() as first:
        plan_run(run_id=run.pk, items=selected_images)
    with django_capture_on_commit_callbacks() as second:
        first[0]()  # batch 0 runs; finishing, it hands out batch 1
    assert run.batches.get(index=1).status == RunBatch.Status.QUEUED

    cancel_run(run=run)
    second[0]()  # batch 1's message arrives after the cancel

    run.refresh_from_db()
    assert (run.status, run.done, run.total) == (Run.Status.CANCELLED, 2, 6)
    assert dict(run.batches.values_list("index", "status")) == {
        0: RunBatch.Status.DONE,
        1: RunBatch.Status.CANCELLED,
        2: RunBatch.Status.CANCELLED,
    }
    with pytest.raises(RunStateError, match="only an open run"):
        cancel_run(run=run)

    run = run_eagerly(resume_run, run=run)

    assert (run.status, run.done, run.total) == (Run.Status.SUCCEEDED, 6, 6)
    assert region_set(run) == region_set(reference)
    with pytest.raises(RunStateError, match="cannot be resumed"):
        resume_run(run=run)


def test_bad_parameters_are_refused_before_anything_is_recorded(make_scenes, tiny_detector_dir):
    dataset = make_scenes(1)
    cases = [
        ({"prompt_mode": "labels", "labels": []}, "at least one label"),
        ({"prompt_mode": "words"}, "prompt_mode"),
        ({"box_threshold": 1.5, "labels": ["x"]}, "box_threshold"),
        ({"batch_size": 0, "labels": ["x"]}, "batch_size"),
        ({"device": "tpu", "labels": ["x"]}, "device"),
        ({"image_filter": {"colour": "red"}, "labels": ["x"]}, "unknown keys"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            start_pseudo_label_run(dataset=dataset, model=tiny_detector_dir, **kwargs)
    assert not Run.objects.exists()


def test_groundingdino_py_batches_go_to_the_queue_of_its_own_environment():
    from webapp.jobs.models import Run
    from webapp.jobs.services import batch_queue_for

    original = Run(kind=Run.Kind.PSEUDO_LABEL, parameters={"backend": "groundingdino-py"})
    plain = Run(kind=Run.Kind.PSEUDO_LABEL, parameters={"backend": "transformers"})
    assert batch_queue_for(original) == "gpu-gdino"
    assert batch_queue_for(plain) is None


@pytest.mark.parametrize(
    ("image_filter", "message"),
    [
        ({"colour": "red"}, "image_filter: unknown keys ['colour']"),
        ({"min_id": -1}, "image_filter.min_id must be a non-negative integer"),
        ({"ids": [1, "2"]}, "image_filter.ids must be a list of integers"),
        ({"ids": list(range(10_001))}, "image_filter.ids holds at most 10000 ids"),
        ({"split": "holdout"}, "image_filter.split: 'holdout' is not a split"),
    ],
)
def test_a_bad_image_filter_is_refused_with_the_key_named(image_filter, message):
    from webapp.jobs.pseudo_label import check_image_filter

    with pytest.raises(ValueError, match=re.escape(message)):
        check_image_filter(image_filter)
