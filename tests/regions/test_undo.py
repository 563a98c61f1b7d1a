"""Ctrl+Z: a server-side stack of each annotator's actions per image, undone as new versions.

The page sends no ids: the server knows the steps, so the stack survives a reload, a second
tab or a new browser. Each request below comes from a fresh client (nothing kept client-side).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from tests.catalog.factories import UserFactory
from webapp.regions.models import Region, RegionChange, UndoStep

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def browser(user) -> Client:
    """A new client each time, as after a reload: only the session cookie is shared."""
    client = Client()
    client.force_login(user)
    return client


def act(user, region, **data):
    region.refresh_from_db()
    data.setdefault("version", region.version)
    url = reverse("regions:region_action", args=[region.pk])
    response = browser(user).post(url, data, **HX)
    assert response.status_code == 200, response.content
    return response


def ctrl_z(user, image):
    return browser(user).post(reverse("regions:undo", args=[image.pk]), **HX)


def state(region):
    region.refresh_from_db()
    return region.status, region.caption


def test_ctrl_z_undoes_the_last_actions_one_by_one_after_a_reload(annotator, image):
    first, second = image.regions.order_by("pk")
    act(annotator, first, action="edit", caption="a red car parked")
    act(annotator, first, action="accept")
    act(annotator, second, action="reject")

    undone = ctrl_z(annotator, image)
    assert undone.status_code == 200
    assert json.loads(undone["HX-Trigger"])["fgam:changed"]["undo"] is True
    assert f'id="row-{second.pk}"' in undone.content.decode()
    assert state(second) == ("pending", "a red car on the road")
    assert state(first) == ("accepted", "a red car parked")

    # The step before: the accept, although the region's version moved since the edit.
    ctrl_z(annotator, image)
    assert state(first) == ("pending", "a red car parked")
    ctrl_z(annotator, image)
    assert state(first) == ("pending", "a red car on the road")
    # All undone as new versions: nothing erased from the history.
    assert [c.after["caption"] for c in RegionChange.objects.filter(region=first)] == [
        "a red car parked", "a red car parked", "a red car parked", "a red car on the road",
    ]  # fmt: skip

    empty = ctrl_z(annotator, image)
    assert empty.status_code == 200
    assert json.loads(empty["HX-Trigger"])["fgam:changed"]["nothing"] is True


def test_accept_all_is_one_step(annotator, image):
    response = browser(annotator).post(reverse("regions:accept_all", args=[image.pk]), **HX)
    assert response.status_code == 200
    assert set(image.regions.values_list("status", flat=True)) == {"accepted"}
    ctrl_z(annotator, image)
    assert set(image.regions.values_list("status", flat=True)) == {"pending"}
    assert UndoStep.objects.get(user=annotator).outcome == "undone"


def test_a_drawn_region_is_undone_after_its_caption(annotator, image):
    created = browser(annotator).post(
        reverse("regions:region_create", args=[image.pk]),
        {"x0": 200, "y0": 100, "x1": 300, "y1": 200},
        **HX,
    )
    assert created.status_code == 200
    drawn = Region.objects.get(image=image, origin="human")
    act(annotator, drawn, action="edit", caption="a yellow sun", phrase="sun")
    ctrl_z(annotator, image)
    drawn.refresh_from_db()
    assert (drawn.phrase, drawn.caption, drawn.version) == ("", "", 3)
    gone = ctrl_z(annotator, image)
    assert f'id="row-{drawn.pk}" hx-swap-oob="delete"' in gone.content.decode()
    assert not Region.objects.filter(pk=drawn.pk).exists()


def test_each_annotator_has_their_own_stack(annotator, image):
    bob = UserFactory(username="bob", roles=["annotator"])
    first, second = image.regions.order_by("pk")
    act(annotator, first, action="accept")
    act(bob, second, action="reject")
    ctrl_z(annotator, image)
    assert state(first)[0] == "pending"
    assert state(second)[0] == "rejected"


def test_a_step_someone_changed_since_answers_409_and_ctrl_z_moves_on(annotator, image):
    bob = UserFactory(username="bob", roles=["annotator"])
    first, second = image.regions.order_by("pk")
    act(annotator, first, action="accept")
    act(annotator, second, action="accept")
    act(bob, second, action="edit", caption="bob's caption")
    refused = ctrl_z(annotator, image)
    assert refused.status_code == 409
    assert state(second) == ("accepted", "bob's caption")
    assert UndoStep.objects.filter(user=annotator, outcome="superseded").count() == 1
    # The next Ctrl+Z undoes the action before it.
    assert ctrl_z(annotator, image).status_code == 200
    assert state(first)[0] == "pending"
