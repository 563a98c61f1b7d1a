"""The runs pages, the curator's buttons and region provenance on the image page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.api.conftest import make_user
from tests.catalog.factories import RegionFactory
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.jobs.captioning import start_caption_run
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.pseudo_label import start_pseudo_label_run

pytestmark = pytest.mark.django_db


def logged_in(*roles: str) -> Client:
    client = Client()
    user = User.objects.filter(username="-".join(roles)).first() or make_user(
        "-".join(roles), *roles
    )
    client.force_login(user)
    return client


@pytest.fixture
def running(make_scenes) -> Run:
    dataset = make_scenes(1)
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL,
        dataset=dataset,
        model_id="IDEA-Research/grounding-dino-tiny",
        status=Run.Status.RUNNING,
        total=40,
        done=10,
        failed=2,
        parameters={"box_threshold": 0.35, "text_threshold": 0.25, "batch_size": 8},
    )
    RunBatch.objects.create(
        run=run,
        index=0,
        ids=[1, 2],
        first_id=1,
        last_id=2,
        status=RunBatch.Status.DONE,
        failed=2,
        done=0,
        errors=[{"id": 1, "error": "<b>bad</b> bytes"}, {"id": 2, "error": "gone"}],
    )
    RunBatch.objects.create(run=run, index=1, ids=[3], first_id=3, last_id=3, status="queued")
    return run


def test_the_run_page_shows_progress_failures_and_polls_while_running(running):
    client = logged_in(ANNOTATOR)

    page = client.get(f"/runs/{running.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'hx-trigger="every 2s"' in html
    assert "10 done, 2 failed of 40" in html
    assert "&lt;b&gt;bad&lt;/b&gt; bytes" in html  # model and file text is escaped
    assert "Cancel" not in html  # annotators see no buttons

    fragment = client.get(f"/runs/{running.pk}/", headers={"HX-Request": "true"})
    assert fragment.content.decode().lstrip().startswith('<section id="run-progress"')
    assert fragment["Vary"] == "HX-Request" or "HX-Request" in fragment["Vary"]

    Run.objects.filter(pk=running.pk).update(status=Run.Status.SUCCEEDED)
    finished = client.get(f"/runs/{running.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in finished  # polling stops once the run has ended


def test_the_runs_list_links_every_run(running):
    html = logged_in(ANNOTATOR).get("/runs/").content.decode()
    assert f'href="/runs/{running.pk}/"' in html and "grounding-dino-tiny" in html
    assert logged_in(ANNOTATOR).get("/runs/?kind=nonsense").status_code == 404


def test_curators_cancel_from_the_page_and_others_are_refused(running):
    assert logged_in(ANNOTATOR).post(f"/runs/{running.pk}/cancel/").status_code == 403
    running.refresh_from_db()
    assert running.status == Run.Status.RUNNING

    curator = logged_in(CURATOR)
    assert "Cancel" in curator.get(f"/runs/{running.pk}/").content.decode()
    response = curator.post(f"/runs/{running.pk}/cancel/", follow=True)
    running.refresh_from_db()
    assert running.status == Run.Status.CANCELLED
    html = response.content.decode()
    assert "Run cancelled." in html and "Resume" in html and "Retry 2 failed" in html
    again = curator.post(f"/runs/{running.pk}/cancel/", follow=True).content.decode()
    assert "only an open run can be cancelled" in again


def test_a_curator_starts_a_run_from_the_dataset_page(make_scenes, tiny_detector_dir):
    dataset = make_scenes(1, name="start-here")
    curator = logged_in(CURATOR)
    response = curator.post(
        f"/runs/start/{dataset.name}/",
        {"kind": "caption", "strategy": "template"},
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    bad = curator.post(f"/runs/start/{dataset.name}/", {"kind": "pseudo_label"}, follow=True)
    assert "The run was not started: labels" in bad.content.decode()
    assert logged_in(ANNOTATOR).post(f"/runs/start/{dataset.name}/").status_code == 403


def test_the_image_page_shows_each_regions_provenance(make_scenes, tiny_detector_dir, run_eagerly):
    dataset = make_scenes(1)
    run = run_eagerly(
        start_pseudo_label_run,
        dataset=dataset,
        model=tiny_detector_dir,
        labels=["dog"],
        box_threshold=0.4,
        text_threshold=0.3,
        device="cpu",
    )
    caption_run = run_eagerly(
        start_caption_run, dataset=dataset, strategy="template", region_filter={"run": run.pk}
    )
    image = dataset.images.get()
    RegionFactory(image=image, origin="gt", phrase="hand drawn")

    html = logged_in(ANNOTATOR).get(f"/images/{image.pk}/").content.decode()

    assert f'<a href="/runs/{run.pk}/">run #{run.pk}</a> pseudo_label' in html
    assert "box ≥ 0.4 · text ≥ 0.3 · prompt: labels" in html
    assert "tiny-grounding-dino" in html
    assert (
        f'caption: <a href="/runs/{caption_run.pk}/">run #{caption_run.pk}</a> · template' in html
    )
    assert "prompt template-v1" in html
