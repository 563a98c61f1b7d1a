"""``POST /api/runs/`` and the cancel, resume and retry actions: validation, roles, answers."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from tests.api.conftest import make_user
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.jobs.models import Run

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def curator_api(db):
    return client_for(make_user("curator1", CURATOR))


@pytest.fixture
def annotator_api(db):
    return client_for(make_user("annotator1", ANNOTATOR))


def test_a_curator_starts_a_pseudo_label_run_and_follows_it_in_the_api(
    curator_api, make_scenes, tiny_detector_dir, django_capture_on_commit_callbacks
):
    dataset = make_scenes(3)
    body = {
        "kind": "pseudo_label",
        "dataset": dataset.pk,
        "model": tiny_detector_dir,
        "labels": ["dog", "red car"],
        "box_threshold": 0.4,
        "batch_size": 2,
        "device": "cpu",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = curator_api.post("/api/runs/", body, format="json")

    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["kind"], created["status"], created["dataset"]) == (
        "pseudo_label",
        "queued",
        dataset.pk,
    )
    assert created["parameters"]["box_threshold"] == 0.4
    assert created["parameters"]["text_threshold"] == 0.25
    run = curator_api.get(f"/api/runs/{created['id']}/").json()
    assert (run["status"], run["done"], run["total"], run["failed"]) == ("succeeded", 3, 3, 0)
    assert run["progress"] == 1.0 and run["items_per_second"] > 0 and run["eta_seconds"] is None
    assert (run["prompt_tokens"], run["completion_tokens"], run["cost"]) == (0, 0, None)
    assert run["failures"] == [] and run["summary"]["regions"] > 0
    listed = curator_api.get("/api/runs/?kind=pseudo_label").json()["results"]
    assert [r["id"] for r in listed] == [created["id"]]
    assert Run.objects.get(pk=created["id"]).created_by.username == "curator1"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "pseudo_label"}, "labels", "at least one label"),
        ({"kind": "pseudo_label", "labels": ["a"], "box_threshold": 2}, "box_threshold", "less"),
        ({"kind": "pseudo_label", "labels": ["a"], "strategy": "llm"}, "strategy", "caption"),
        ({"kind": "pseudo_label", "prompt_mode": "caption", "labels": ["a"]}, "labels", "only"),
        ({"kind": "pseudo_label", "labels": ["a"], "device": "tpu"}, "device", ""),
        ({"kind": "pseudo_label", "labels": ["a"], "batch_size": 0}, "batch_size", ""),
        (
            {"kind": "pseudo_label", "labels": ["a"], "image_filter": {"colour": 1}},
            "image_filter",
            "unknown keys",
        ),
        ({"kind": "caption", "strategy": "poem"}, "strategy", "not a valid choice"),
        ({"kind": "caption", "strategy": "local"}, "model", "needs a model"),
        ({"kind": "caption", "labels": ["a"]}, "labels", "pseudo-label"),
        (
            {"kind": "caption", "region_filter": {"origin": "robot"}},
            "region_filter",
            "not an origin",
        ),
        ({"kind": "thumbnails"}, "kind", "not a valid choice"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field_and_starts_nothing(
    curator_api, make_scenes, body, field, words
):
    dataset = make_scenes(1)
    response = curator_api.post("/api/runs/", {"dataset": dataset.pk, **body}, format="json")
    assert response.status_code == 400
    assert words in " ".join(response.json()[field])
    assert not Run.objects.exists()


def test_an_unknown_dataset_is_a_400(curator_api):
    response = curator_api.post(
        "/api/runs/", {"kind": "pseudo_label", "dataset": 999, "labels": ["a"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"dataset": ["No dataset with this id."]}


def test_only_curators_start_and_steer_runs(annotator_api, make_scenes, tiny_detector_dir):
    dataset = make_scenes(1)
    run = Run.objects.create(kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, status="running")
    body = {"kind": "pseudo_label", "dataset": dataset.pk, "labels": ["a"]}
    assert annotator_api.post("/api/runs/", body, format="json").status_code == 403
    for action in ("cancel", "resume", "retry-failed"):
        assert annotator_api.post(f"/api/runs/{run.pk}/{action}/").status_code == 403
    assert annotator_api.get(f"/api/runs/{run.pk}/").status_code == 200
    run.refresh_from_db()
    assert run.status == "running"


def test_cancel_resume_and_retry_answer_409_when_the_run_does_not_allow_it(
    curator_api, make_scenes, tiny_detector_dir, django_capture_on_commit_callbacks
):
    dataset = make_scenes(3)
    broken = dataset.images.order_by("pk").first()
    default_storage.delete(broken.storage_path)
    body = {
        "kind": "pseudo_label",
        "dataset": dataset.pk,
        "model": tiny_detector_dir,
        "labels": ["dog"],
        "device": "cpu",
    }
    with django_capture_on_commit_callbacks(execute=True):
        run_id = curator_api.post("/api/runs/", body, format="json").json()["id"]

    cancelled = curator_api.post(f"/api/runs/{run_id}/cancel/")
    assert cancelled.status_code == 409
    assert "only an open run can be cancelled" in cancelled.json()["detail"]
    assert curator_api.post(f"/api/runs/{run_id}/resume/").status_code == 409

    detail = curator_api.get(f"/api/runs/{run_id}/").json()
    assert detail["failed"] == 1
    assert detail["failures"] == [
        {"batch": 0, "id": broken.pk, "error": detail["failures"][0]["error"]}
    ]
    assert "does not exist" in detail["failures"][0]["error"]
    with django_capture_on_commit_callbacks(execute=True):
        retried = curator_api.post(f"/api/runs/{run_id}/retry-failed/")
    assert retried.status_code == 200
    after = curator_api.get(f"/api/runs/{run_id}/").json()
    assert (after["failed"], after["done"], after["status"]) == (1, 2, "succeeded")  # still missing

    thumbnails = Run.objects.create(kind=Run.Kind.THUMBNAILS, status="running")
    refused = curator_api.post(f"/api/runs/{thumbnails.pk}/cancel/")
    assert refused.status_code == 409 and "thumbnails" in refused.json()["detail"]
