"""The trajectories REST API: filters, reads with steps, PATCH with If-Match, approve, 403."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.catalog.factories import ImageFactory
from tests.trajectories.factories import make_trajectory
from webapp.jobs.models import Run
from webapp.trajectories.models import Trajectory, TrajectoryChange

pytestmark = pytest.mark.django_db
LIST = "/api/trajectories/"


@pytest.fixture
def api(annotator):
    client = APIClient()
    client.force_login(annotator)
    return client


def detail(trajectory, suffix=""):
    return f"{LIST}{trajectory.pk}/{suffix}"


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_a_read_has_the_steps_in_order_and_an_etag(api, trajectory):
    response = api.get(detail(trajectory))
    assert response.status_code == 200 and response["ETag"] == '"1"'
    data = response.json()
    assert data["question"] == "What is left of the tree?"
    assert [s["k"] for s in data["steps"]] == [0, 1]
    assert data["steps"][0]["error_types"] == ["attribute"]
    assert data["steps"][1]["feedback"] == "No further corrections needed."
    assert data["image_sha256"] == trajectory.image.sha256


def test_the_list_filters_by_status_error_type_run_dataset_and_seeded_error(api, image, dataset):
    run = Run.objects.create(kind=Run.Kind.TRAJECTORY, dataset=dataset, model_id="m")
    spatial = make_trajectory(
        image, chain=[("A.", "F.", []), ("B.", "F.", ["spatial"]), ("C.", "", ["spatial"])],
        seeded_error="spatial", run=run,
    )  # fmt: skip
    approved = make_trajectory(image, status="approved", final_answer="A blue car.")
    other = make_trajectory(ImageFactory(), chain=[("A.", "F.", ["object"])])
    assert ids(api.get(LIST)) == [spatial.pk, approved.pk, other.pk]
    assert ids(api.get(LIST, {"status": "approved"})) == [approved.pk]
    # Two tagged steps, still one row.
    assert ids(api.get(LIST, {"error_type": "spatial"})) == [spatial.pk]
    assert ids(api.get(LIST, {"error_type": "attribute"})) == [approved.pk]
    assert ids(api.get(LIST, {"run": run.pk})) == [spatial.pk]
    assert ids(api.get(LIST, {"dataset": dataset.pk})) == [spatial.pk, approved.pk]
    assert ids(api.get(LIST, {"seeded_error": "spatial", "dataset": dataset.pk})) == [spatial.pk]
    bad = api.get(LIST, {"error_type": "colour"})
    assert bad.status_code == 400 and set(bad.json()) == {"error_type"}
    unknown = api.get(LIST, {"colour": "red"})
    assert unknown.status_code == 400 and set(unknown.json()) == {"colour"}


def test_the_list_pages_by_cursor_with_a_fixed_number_of_queries(api, image):
    for n in range(5):
        make_trajectory(image, chain=[(f"A{k}.", "F.", []) for k in range(n + 1)])
    first = api.get(LIST, {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == [r["id"] + 2 for r in first["results"]]
    counts = []
    for size in (1, 5):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(LIST, {"page_size": size}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_patch_with_if_match_edits_and_answers_the_new_etag(api, trajectory):
    response = api.patch(
        detail(trajectory),
        {"edit_steps": {"1": {"response": "A blue car, left of the tree.",
                              "error_types": ["spatial"]}},
         "final_answer": "A blue car, left of the tree."},
        format="json", HTTP_IF_MATCH='"1"',
    )  # fmt: skip
    assert response.status_code == 200, response.content
    assert response["ETag"] == '"2"'
    step = response.json()["steps"][1]
    assert step["response"] == "A blue car, left of the tree." and step["response_by"] == "user:ann"
    assert step["error_types"] == ["spatial"]
    assert TrajectoryChange.objects.filter(trajectory=trajectory, user__username="ann").count() == 1


def test_a_stale_version_answers_409_with_the_current_trajectory(api, trajectory):
    first = api.patch(detail(trajectory), {"version": 1, "question": "Q2?"}, format="json")
    assert first.status_code == 200
    response = api.patch(detail(trajectory), {"version": 1, "question": "Q3?"}, format="json")
    assert response.status_code == 409
    assert response.json()["question"] == "Q2?" and response["ETag"] == '"2"'
    assert Trajectory.objects.get(pk=trajectory.pk).question == "Q2?"


def test_bad_edits_are_refused_with_the_field_named(api, trajectory):
    missing = api.patch(detail(trajectory), {"question": "Q?"}, format="json")
    assert missing.status_code == 400 and "version" in missing.json()
    bad_tag = api.patch(
        detail(trajectory), {"version": 1, "edit_steps": {"0": {"error_types": ["colour"]}}},
        format="json",
    )  # fmt: skip
    assert bad_tag.status_code == 400 and "edit_steps" in bad_tag.json()
    no_step = api.patch(
        detail(trajectory), {"version": 1, "edit_steps": {"9": {"response": "x"}}}, format="json"
    )
    assert no_step.status_code == 400 and "no step 9" in no_step.json()["detail"]
    assert api.patch(detail(trajectory), {"question": "Q?"}, HTTP_IF_MATCH="x").status_code == 400
    assert Trajectory.objects.get(pk=trajectory.pk).version == 1


def test_approve_needs_a_final_answer_and_reject_decides(api, trajectory, image):
    refused = api.post(detail(trajectory, "approve/"), {"version": 1}, format="json")
    assert refused.status_code == 400 and "final answer" in refused.json()["detail"]
    api.patch(detail(trajectory), {"version": 1, "final_answer": "A blue car."}, format="json")
    approved = api.post(detail(trajectory, "approve/"), HTTP_IF_MATCH='"2"')
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert api.post(detail(trajectory, "reject/"), {"version": 2}).status_code == 409
    other = make_trajectory(image)
    assert api.post(detail(other, "reject/"), {"version": 1}).json()["status"] == "rejected"


def test_adding_and_removing_steps_through_the_api(api, trajectory):
    response = api.patch(
        detail(trajectory), {"version": 1, "add_step": {"response": "A third answer."}},
        format="json",
    )  # fmt: skip
    assert [s["response"] for s in response.json()["steps"]][-1] == "A third answer."
    response = api.patch(detail(trajectory), {"version": 2, "remove_step": 0}, format="json")
    assert [s["k"] for s in response.json()["steps"]] == [0, 1]


def test_raters_get_403(rater, trajectory):
    client = APIClient()
    client.force_login(rater)
    assert client.get(LIST).status_code == 403
    assert client.get(detail(trajectory)).status_code == 403
    patch = client.patch(detail(trajectory), {"version": 1, "question": "x"}, format="json")
    assert patch.status_code == 403
    assert client.post(detail(trajectory, "approve/"), {"version": 1}).status_code == 403
    assert APIClient().get(LIST).status_code in (401, 403)


def test_curators_import_a_jsonl_upload_and_annotators_may_not(curator, annotator, image):
    from django.core.files.uploadedfile import SimpleUploadedFile

    line = {
        "trajectory": "t1", "step": 0, "image": image.sha256, "question": "Where?",
        "response": "Left.", "feedback": "No further corrections needed.", "target": None,
    }  # fmt: skip
    good = SimpleUploadedFile("mine.jsonl", (json.dumps(line) + "\n").encode())
    client = APIClient()
    client.force_login(curator)
    url = f"{LIST}import/"
    response = client.post(url, {"dataset": image.dataset.name, "file": good})
    assert response.status_code == 201, response.content
    assert response.json()["counts"]["trajectories new"] == 1
    bad = SimpleUploadedFile("mine.jsonl", b'{"trajectory": "t2", "step": 0}\n')
    response = client.post(url, {"dataset": image.dataset.name, "file": bad})
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "file": "mine.jsonl", "record": "line 1", "field": "image", "reason": "missing",
    }  # fmt: skip
    client.force_login(annotator)
    again = SimpleUploadedFile("mine.jsonl", (json.dumps(line) + "\n").encode())
    assert client.post(url, {"dataset": image.dataset.name, "file": again}).status_code == 403
    assert Trajectory.objects.count() == 1
