"""Marking images exhaustively reviewed: the review page's key and button, Ctrl+Z, the API."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.catalog.models import DatasetAccess, Image
from webapp.regions.models import Lease, Region, UndoStep

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
BULK = "/api/images/exhaustively-reviewed/"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def reviewed_image(dataset, phrases=("car", "person")) -> Image:
    image = ImageFactory(dataset=dataset)
    for phrase in phrases:
        RegionFactory(image=image, phrase=phrase, status=Region.Status.ACCEPTED)
    return image


def mark(user, image, **data):
    data.setdefault("reviewed", "1")
    return browser(user).post(reverse("regions:review_mark", args=[image.pk]), data, **HX)


def ctrl_z(user, image):
    return browser(user).post(reverse("regions:undo", args=[image.pk]), **HX)


def mark_of(image):
    image.refresh_from_db()
    return image.exhaustively_reviewed_at, image.exhaustively_reviewed_by


def test_mark_and_next_records_who_and_when_and_opens_the_next_image(annotator, dataset, image):
    done = reviewed_image(dataset)
    before = timezone.now()
    response = mark(annotator, done, next="1")

    assert response.status_code == 200
    next_url = reverse("regions:review_image", args=[image.pk]) + f"?marked={done.pk}"
    assert response["HX-Redirect"] == next_url
    at, by = mark_of(done)
    assert by == annotator and before <= at <= timezone.now()
    assert Lease.objects.get(user=annotator).image_id == image.pk

    page = browser(annotator).get(next_url).content.decode()
    assert f'Marked <a href="/review/images/{done.pk}/">image #{done.pk}</a>' in page
    assert "Not marked exhaustively reviewed." in page
    page = browser(annotator).get(reverse("regions:review_image", args=[done.pk])).content
    assert "Exhaustively reviewed</span>\n        <span>by <strong>ann</strong>" in page.decode()


def test_without_javascript_mark_and_next_redirects(annotator, dataset, image):
    done = reviewed_image(dataset)
    url = reverse("regions:review_mark", args=[done.pk])
    response = browser(annotator).post(url, {"reviewed": "1", "next": "1"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("regions:review_image", args=[image.pk]))
    assert mark_of(done)[1] == annotator


def test_the_last_image_marked_goes_back_to_the_empty_queue(annotator, dataset):
    done = reviewed_image(dataset)
    response = mark(annotator, done, next="1")
    assert response["HX-Redirect"].startswith(reverse("regions:queue", args=[dataset.name]))
    assert "empty=1" in response["HX-Redirect"]


def test_ctrl_z_clears_the_mark_and_redraws_the_state(annotator, dataset):
    done = reviewed_image(dataset)
    mark(annotator, done, next="1")

    undone = ctrl_z(annotator, done)
    assert undone.status_code == 200
    assert mark_of(done) == (None, None)
    body = undone.content.decode()
    assert 'id="review-state"' in body and "Not marked exhaustively reviewed." in body
    assert json.loads(undone["HX-Trigger"])["fgam:changed"]["reviewed"] is False
    assert UndoStep.objects.get(image=done).outcome == UndoStep.Outcome.UNDONE
    # Nothing left to undo: the step is closed.
    again = ctrl_z(annotator, done)
    assert json.loads(again["HX-Trigger"])["fgam:changed"]["nothing"] is True


def test_ctrl_z_undoes_the_mark_first_then_the_edit_before_it(annotator, dataset, image):
    first = image.regions.order_by("pk").first()
    other = image.regions.exclude(pk=first.pk).get()
    client = browser(annotator)
    for region in (first, other):
        url = reverse("regions:region_action", args=[region.pk])
        client.post(url, {"action": "accept", "version": region.version}, **HX)
    assert mark(annotator, image).status_code == 200
    assert mark_of(image)[1] == annotator

    ctrl_z(annotator, image)
    first.refresh_from_db()
    other.refresh_from_db()
    assert mark_of(image) == (None, None)
    assert (first.status, other.status) == ("accepted", "accepted")

    ctrl_z(annotator, image)
    other.refresh_from_db()
    assert other.status == "pending"


def test_clearing_the_mark_is_undone_back_to_the_first_mark(annotator, dataset):
    done = reviewed_image(dataset)
    curator = UserFactory(username="cur", roles=["curator"])
    mark(curator, done)
    first = mark_of(done)

    cleared = mark(annotator, done, reviewed="0")
    assert cleared.status_code == 200
    assert "Not marked exhaustively reviewed." in cleared.content.decode()
    assert mark_of(done) == (None, None)

    restored = ctrl_z(annotator, done)
    assert mark_of(done) == first
    assert "by <strong>cur</strong>" in restored.content.decode()


def test_marking_is_refused_while_regions_are_pending(annotator, image):
    response = mark(annotator, image, next="1")
    assert response.status_code == 422
    assert "2 regions are still pending: accept or reject them first" in response.content.decode()
    assert mark_of(image) == (None, None)
    assert not UndoStep.objects.exists()


def test_ctrl_z_leaves_a_mark_someone_changed_since(annotator, dataset):
    done = reviewed_image(dataset)
    mark(annotator, done)
    curator = UserFactory(username="cur", roles=["curator"])
    api = APIClient()
    api.force_login(curator)
    api.post(BULK, {"images": [done.pk], "reviewed": False}, format="json")
    api.post(BULK, {"images": [done.pk], "reviewed": True}, format="json")

    response = ctrl_z(annotator, done)
    assert response.status_code == 422
    assert "changed by someone since" in response.content.decode()
    assert mark_of(done)[1] == curator
    assert UndoStep.objects.get(image=done).outcome == UndoStep.Outcome.SUPERSEDED


def test_the_page_has_the_button_and_its_key_in_the_help(annotator, image):
    page = browser(annotator).get(reverse("regions:review_image", args=[image.pk])).content
    page = page.decode()
    assert 'id="mark-next-form"' in page and "Mark exhaustively reviewed &amp; next" in page
    assert "<td><kbd>M</kbd></td>" in page


def test_raters_cannot_mark(image):
    rater = UserFactory(username="rita", roles=["rater"])
    image.regions.update(status=Region.Status.ACCEPTED)
    assert mark(rater, image).status_code == 403
    assert mark_of(image) == (None, None)


# --- The API ------------------------------------------------------------------------------------


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_the_api_marks_and_clears_in_bulk_and_says_what_it_did(dataset, image):
    curator = UserFactory(username="cur", roles=["curator"])
    done, already = reviewed_image(dataset), reviewed_image(dataset)
    api = api_as(curator)
    api.post(BULK, {"images": [already.pk], "reviewed": True}, format="json")

    ids = [done.pk, already.pk, image.pk, 987654]
    response = api.post(BULK, {"images": ids, "reviewed": True}, format="json")
    assert response.status_code == 200
    assert response.json() == {"changed": 1, "unchanged": 1, "pending": 1, "missing": 1}
    assert mark_of(done)[1] == curator and mark_of(image) == (None, None)

    shown = api.get(f"/api/images/{done.pk}/").json()
    assert shown["exhaustively_reviewed_by"] == curator.pk
    assert shown["exhaustively_reviewed_at"].startswith(str(timezone.now().year))

    response = api.post(BULK, {"images": ids, "reviewed": False}, format="json")
    assert response.json() == {"changed": 2, "unchanged": 1, "pending": 0, "missing": 1}
    assert mark_of(done) == (None, None) and mark_of(already) == (None, None)


def test_the_image_fields_are_read_only(dataset):
    curator = UserFactory(username="cur", roles=["curator"])
    done = reviewed_image(dataset)
    response = api_as(curator).patch(
        f"/api/images/{done.pk}/", {"exhaustively_reviewed_at": "2020-01-01T00:00:00Z"}
    )
    assert response.status_code == 405
    assert mark_of(done) == (None, None)


def test_the_api_refuses_bad_bodies(annotator):
    response = api_as(annotator).post(BULK, {"images": [], "reviewed": True}, format="json")
    assert response.status_code == 400 and "images" in response.json()


def test_the_api_refuses_raters(dataset):
    done = reviewed_image(dataset)
    rater = UserFactory(username="rita", roles=["rater"])
    response = api_as(rater).post(BULK, {"images": [done.pk], "reviewed": True}, format="json")
    assert response.status_code == 403
    assert mark_of(done) == (None, None)


def test_an_annotator_cannot_mark_images_of_a_dataset_restricted_to_others(annotator):
    secret = DatasetFactory(name="secret", restricted=True)
    hidden = reviewed_image(secret)
    api = api_as(annotator)
    response = api.post(BULK, {"images": [hidden.pk], "reviewed": True}, format="json")
    assert response.json() == {"changed": 0, "unchanged": 0, "pending": 0, "missing": 1}
    assert mark_of(hidden) == (None, None)
    assert mark(annotator, hidden).status_code == 404

    DatasetAccess.objects.create(dataset=secret, user=annotator)
    response = api.post(BULK, {"images": [hidden.pk], "reviewed": True}, format="json")
    assert response.json()["changed"] == 1
