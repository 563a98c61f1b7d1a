"""``/api/versions/`` and the version pages: list, detail, cut, download; only ready ones show."""

from __future__ import annotations

import io
import tarfile

import pytest
from rest_framework.test import APIClient

from tests.api.conftest import make_user
from tests.catalog.factories import DatasetFactory, RegionFactory
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.exports.models import DatasetVersion

pytestmark = pytest.mark.django_db


def client(*roles: str, name: str = "u") -> APIClient:
    c = APIClient()
    c.force_login(make_user(name, *roles))
    return c


@pytest.fixture
def curator_api() -> APIClient:
    return client(CURATOR, name="cur")


def cut(api: APIClient, run_eagerly_callbacks, **body) -> dict:
    with run_eagerly_callbacks(execute=True):
        response = api.post("/api/versions/", {"datasets": ["street"], **body}, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def test_a_curator_cuts_a_version_and_everyone_reads_and_downloads_it(
    reviewed, curator_api, django_capture_on_commit_callbacks
):
    created = cut(curator_api, django_capture_on_commit_callbacks, reference=True)
    assert created["status"] == "queued"  # the task ran after this answer was made
    reader = client(ANNOTATOR, name="ann")
    listed = reader.get("/api/versions/").json()["results"]
    assert [v["name"] for v in listed] == [created["name"]]
    version = listed[0]
    assert version["status"] == "ready" and len(version["content_sha256"]) == 64
    assert version["counts"]["stage1_regions"] == 16 and version["datasets"] == ["street"]
    assert version["size_bytes"] > 0
    assert version["progress"] == {"phase": "done", "done": 24, "total": 24,
                                   "percent": 100.0}  # fmt: skip
    detail = reader.get(f"/api/versions/{version['id']}/").json()
    assert detail["manifest"]["content_sha256"] == version["content_sha256"]

    response = reader.get(f"/api/versions/{version['id']}/download/")
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert names[0] == f"{version['name']}/manifest.json"
    assert f"{version['name']}/stage1/index.parquet" in names
    one = reader.get(f"/api/versions/{version['id']}/download/?path=manifest.json")
    assert b"content_sha256" in b"".join(one.streaming_content)
    assert reader.get(f"/api/versions/{version['id']}/download/?path=../x").status_code == 404


def test_versions_not_ready_are_not_listed_and_not_downloadable(reviewed, curator_api):
    response = curator_api.post("/api/versions/", {"datasets": ["street"]}, format="json")
    pk = response.json()["id"]  # no commit callbacks ran: the version stays queued
    assert curator_api.get("/api/versions/").json()["results"] == []
    queued = curator_api.get("/api/versions/?status=queued").json()["results"]
    assert [v["id"] for v in queued] == [pk]
    assert curator_api.get(f"/api/versions/{pk}/download/").status_code == 404


def test_bad_cuts_are_400_with_the_reason(reviewed, curator_api):
    bad = curator_api.post(
        "/api/versions/", {"datasets": ["street"], "filters": {"min_score": "x"}}, format="json"
    )
    assert bad.status_code == 400 and "min_score" in str(bad.json())
    missing = curator_api.post("/api/versions/", {"datasets": ["nope"]}, format="json")
    assert missing.status_code == 400 and "nope" in str(missing.json())
    assert curator_api.get("/api/versions/?colour=red").status_code == 400
    assert not DatasetVersion.objects.exists()


def test_only_curators_cut_versions(reviewed):
    response = client(ANNOTATOR, name="ann").post(
        "/api/versions/", {"datasets": ["street"]}, format="json"
    )
    assert response.status_code == 403


def test_the_pages_show_counts_hash_filters_and_lineage(
    reviewed, curator_api, django_capture_on_commit_callbacks
):
    first = cut(curator_api, django_capture_on_commit_callbacks, reference=True)
    second = cut(curator_api, django_capture_on_commit_callbacks, reference=True)
    page = curator_api.get("/versions/").content.decode()
    assert first["name"] in page and second["name"] in page and "Cut version" in page
    v2 = DatasetVersion.objects.get(pk=second["id"])
    detail = curator_api.get(f"/versions/{v2.pk}/").content.decode()
    assert v2.content_sha256 in detail
    assert f'href="/versions/{first["id"]}/"' in detail  # derived from the earlier cut
    assert "exclude_flagged" in detail and "stage1_regions" in detail
    assert "Start training job" in detail and "max_regions_per_image" in detail


def test_the_cut_form_reports_an_empty_selection(media_root, curator_api):
    RegionFactory(image__dataset=DatasetFactory(name="raw"), origin="gt")
    response = curator_api.post(
        "/versions/cut/", {"datasets": ["raw"], "origins": ["human"]}, follow=True
    )
    assert "empty selection" in response.content.decode()
