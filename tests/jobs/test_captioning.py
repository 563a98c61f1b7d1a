"""Caption runs in eager mode: the template captioner, and the LLM one against a real
OpenAI-compatible server on loopback (tests/workers/llm_server.py)."""

from __future__ import annotations

import pytest
from django.db.models import F

from tests.catalog.factories import RegionFactory
from tests.workers.llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, LLMServer
from webapp.jobs.captioning import process_caption_batch, start_caption_run
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import retry_failed, run_cost
from webapp.regions.models import Region, RegionChange
from webapp.regions.services import update_region

pytestmark = pytest.mark.django_db


@pytest.fixture
def uncaptioned(make_scenes):
    """A dataset with 5 detector regions without captions (and gt regions that have one)."""
    dataset = make_scenes(3)
    images = list(dataset.images.order_by("pk"))
    for n, phrase in enumerate(["dog", "red car", "cat", "kite", "bus"]):
        RegionFactory(
            image=images[n % 3],
            phrase=phrase,
            caption="",
            origin=Region.Origin.DETECTOR,
            x0=5.0 + n,
            y0=5.0,
            x1=60.0,
            y1=50.0,
            score=0.5,
        )
    return dataset


def test_a_template_run_captions_every_uncaptioned_region_with_history(uncaptioned, run_eagerly):
    run = run_eagerly(start_caption_run, dataset=uncaptioned, strategy="template", batch_size=2)

    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 5, 5, 0)
    assert run.parameters["prompt_version"] == "template-v1"
    assert run.batches.count() == 3
    detector = Region.objects.filter(origin=Region.Origin.DETECTOR)
    assert not detector.filter(caption="").exists()
    dog = detector.get(phrase="dog")
    assert dog.caption.startswith("a ") and "dog" in dog.caption and dog.version == 2
    change = RegionChange.objects.get(region=dog)
    assert (change.run_id, change.user, change.version) == (run.pk, None, 2)
    assert (change.before["caption"], change.after["caption"]) == ("", dog.caption)
    # gt regions had captions already: untouched, not even selected.
    assert set(Region.objects.filter(origin="gt").values_list("version", flat=True)) == {1}
    assert (run.prompt_tokens, run.completion_tokens, run_cost(run)) == (0, 0, None)


def test_a_caption_typed_by_a_person_meanwhile_is_never_overwritten(
    uncaptioned, run_eagerly, django_capture_on_commit_callbacks
):
    run = start_caption_run(dataset=uncaptioned, strategy="template", batch_size=10)
    from webapp.jobs.captioning import selected_regions
    from webapp.jobs.services import plan_run

    with django_capture_on_commit_callbacks() as queued:
        plan_run(run_id=run.pk, items=selected_regions)
    dog = Region.objects.get(phrase="dog", origin="detector")
    update_region(region_id=dog.pk, expected_version=1, changes={"caption": "my own words"})

    for callback in queued:
        callback()

    dog.refresh_from_db()
    assert (dog.caption, dog.version) == ("my own words", 2)
    assert not RegionChange.objects.filter(region=dog, run=run).exists()
    run.refresh_from_db()
    assert (run.status, run.done) == (Run.Status.SUCCEEDED, 5)
    assert RegionChange.objects.filter(run=run).count() == 4


def test_a_caption_batch_run_twice_writes_each_caption_once(uncaptioned, run_eagerly):
    run = run_eagerly(start_caption_run, dataset=uncaptioned, strategy="template", batch_size=5)
    batch = run.batches.get()
    captions = dict(Region.objects.values_list("pk", "caption"))

    RunBatch.objects.filter(pk=batch.pk).update(status=RunBatch.Status.RUNNING)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, finished_at=None, done=F("done") - batch.done
    )
    run_eagerly(process_caption_batch, batch_id=batch.pk)

    run.refresh_from_db()
    assert (run.status, run.done, run.total) == (Run.Status.SUCCEEDED, 5, 5)
    assert dict(Region.objects.values_list("pk", "caption")) == captions
    assert RegionChange.objects.filter(run=run).count() == 5


def test_an_llm_run_records_tokens_cost_and_refusals_and_retries_them(
    uncaptioned, run_eagerly, settings
):
    settings.FGAM_LLM_PRICE_PROMPT_PER_1K = 0.5
    settings.FGAM_LLM_PRICE_COMPLETION_PER_1K = 2.0
    with LLMServer(script={"Phrase: kite": ["refusal"], "Phrase: bus": ["429", "ok"]}) as server:
        settings.FGAM_LLM_BASE_URL = server.url
        run = run_eagerly(
            start_caption_run,
            dataset=uncaptioned,
            strategy="llm",
            model="tiny-llm",
            batch_size=3,
            concurrency=4,
            max_retries=3,
        )
        assert (run.status, run.done, run.failed, run.total) == (Run.Status.SUCCEEDED, 4, 1, 5)
        kite = Region.objects.get(phrase="kite")
        assert kite.caption == ""
        assert run.errors[0]["id"] == kite.pk and "refus" in run.errors[0]["error"].lower()
        assert server.counts["Phrase: bus"] == 2  # the 429 was retried
        assert run.parameters["prompt_version"] == "llm-region-v1"
        assert run.parameters["prompt_text"].startswith("[system]")
        assert run.parameters["base_url"] == server.url
        assert "api_key" not in run.parameters
        assert run.prompt_tokens >= 4 * PROMPT_TOKENS
        assert run.completion_tokens >= 4 * COMPLETION_TOKENS
        assert run_cost(run) == pytest.approx(
            run.prompt_tokens / 1000 * 0.5 + run.completion_tokens / 1000 * 2.0
        )

        assert run_eagerly(retry_failed, run=run) == 1  # the refusal was used up: now it answers

    run.refresh_from_db()
    kite.refresh_from_db()
    assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 5, 0)
    assert kite.caption and RegionChange.objects.get(region=kite).run_id == run.pk
