"""PATCH /api/regions/ID/: the review edits for scripts, with the same conflict rules."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.catalog.factories import UserFactory
from webapp.regions.models import RegionChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(annotator):
    client = APIClient()
    client.force_authenticate(annotator)
    return client


def test_a_patch_with_if_match_saves_and_answers_the_new_etag(api, image):
    region = image.regions.first()
    url = f"/api/regions/{region.pk}/"
    etag = api.get(url)["ETag"]
    assert etag == '"1"'
    response = api.patch(url, {"status": "accepted"}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 200
    assert response.data["status"] == "accepted" and response["ETag"] == '"2"'
    assert RegionChange.objects.get(region=region).user.username == "ann"


def test_a_stale_version_answers_409_with_the_current_region(api, image):
    region = image.regions.first()
    url = f"/api/regions/{region.pk}/"
    assert api.patch(url, {"caption": "first", "version": 1}, format="json").status_code == 200
    stale = api.patch(url, {"caption": "second", "version": 1}, format="json")
    assert stale.status_code == 409
    assert stale.data["caption"] == "first" and stale.data["version"] == 2
    region.refresh_from_db()
    assert region.caption == "first"


def test_a_patch_without_a_version_or_with_a_bad_box_is_refused(api, image):
    region = image.regions.first()
    url = f"/api/regions/{region.pk}/"
    assert api.patch(url, {"status": "accepted"}, format="json").status_code == 400
    bad = api.patch(url, {"box": [0, 0, 9999, 10], "version": 1}, format="json")
    assert bad.status_code == 400
    region.refresh_from_db()
    assert region.version == 1


def test_raters_get_403_from_the_regions_api(image):
    client = APIClient()
    client.force_authenticate(UserFactory(username="rita", roles=["rater"]))
    region = image.regions.first()
    assert client.get("/api/regions/").status_code == 403
    response = client.patch(f"/api/regions/{region.pk}/", {"version": 1, "status": "accepted"})
    assert response.status_code == 403
