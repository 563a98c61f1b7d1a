"""The review page and its htmx actions, as an annotator's browser would call them."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.catalog.factories import ImageFactory, RegionFactory, UserFactory
from tests.regions.conftest import detector_regions
from webapp.jobs.models import Run
from webapp.regions.models import Lease, Region, RegionChange

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def action(client, region, **data):
    data.setdefault("version", region.version)
    return client.post(reverse("regions:region_action", args=[region.pk]), data, **HX)


def test_the_review_page_shows_every_region_as_a_box_and_a_row(client_as, annotator, image):
    response = client_as(annotator).get(reverse("regions:review_image", args=[image.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    for region in image.regions.all():
        assert f'id="row-{region.pk}"' in html
        assert f'id="box-{region.pk}"' in html
    assert "box ≥ 0.35" in html  # provenance: the run and its threshold
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize("path", ["index", "queue", "page", "action", "history"])
def test_raters_get_403_everywhere(client_as, image, path):
    rater = UserFactory(username="rita", roles=["rater"])
    client = client_as(rater)
    region = image.regions.first()
    urls = {
        "index": reverse("regions:index"),
        "queue": reverse("regions:queue", args=[image.dataset.name]),
        "page": reverse("regions:review_image", args=[image.pk]),
        "history": reverse("regions:history", args=[region.pk]),
    }
    if path == "action":
        response = action(client, region, action="accept")
    else:
        response = client.get(urls[path])
    assert response.status_code == 403
    region.refresh_from_db()
    assert region.status == "pending"


def test_the_page_runs_the_same_number_of_queries_for_10_and_300_regions(
    client_as, annotator, dataset, run
):
    client = client_as(annotator)
    counts = []
    for n in (10, 300):
        image = ImageFactory(dataset=dataset)
        detector_regions(image, run, [0.5] * n)
        url = reverse("regions:review_image", args=[image.pk])
        client.get(url)  # warm the session
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.content.decode().count('<tr id="row-') == n
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_accept_answers_with_only_the_row_and_the_box(client_as, annotator, image):
    region = image.regions.order_by("pk").first()
    response = action(client_as(annotator), region, action="accept")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<tr ") == 1
    assert f'<tr id="row-{region.pk}"' in html and f'id="box-{region.pk}"' in html
    assert 'hx-swap-oob="outerHTML"' in html
    region.refresh_from_db()
    assert (region.status, region.version) == ("accepted", 2)
    trigger = json.loads(response["HX-Trigger"])["fgam:changed"]
    assert trigger["changes"] == [RegionChange.objects.get(region=region).pk]
    assert "HX-Request" in response["Vary"]


def test_a_stale_version_gets_409_with_both_versions_and_nothing_is_written(
    client_as, annotator, image
):
    region = image.regions.order_by("pk").first()
    other = UserFactory(username="bob", roles=["annotator"])
    assert (
        action(client_as(other), region, action="edit", caption="their caption").status_code == 200
    )
    client = client_as(annotator)
    response = action(client, region, version=1, action="edit", caption="my caption")
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#conflict"
    html = response.content.decode()
    assert "their caption" in html and "my caption" in html and "bob" in html
    region.refresh_from_db()
    assert (region.caption, region.version) == ("their caption", 2)

    # Keep mine: the panel's form re-sends the edit with the version it now knows.
    kept = action(client, region, version=2, action="edit", caption="my caption")
    assert kept.status_code == 200
    region.refresh_from_db()
    assert (region.caption, region.version) == ("my caption", 3)
    # Take theirs: the current row and box, as they are.
    theirs = client.get(reverse("regions:region", args=[region.pk]), **HX)
    assert "my caption" in theirs.content.decode()


def test_captions_from_models_and_people_are_shown_as_text(client_as, annotator, image):
    region = image.regions.order_by("pk").first()
    client = client_as(annotator)
    evil = '<script>alert(1)</script>" onmouseover="alert(2)'
    response = action(client, region, action="edit", caption=evil, phrase="<b>car</b>")
    assert response.status_code == 200
    for html in (
        response.content.decode(),
        client.get(reverse("regions:review_image", args=[image.pk])).content.decode(),
        client.get(reverse("regions:history", args=[region.pk])).content.decode(),
    ):
        assert "<script>alert(1)" not in html
        assert '" onmouseover="alert(2)' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<b>car</b>" not in html


def test_a_box_can_be_moved_and_a_box_outside_the_image_is_refused(client_as, annotator, image):
    region = image.regions.order_by("pk").first()
    client = client_as(annotator)
    response = action(client, region, action="box", x0=5, y0=6, x1=50.5, y1=60)
    assert response.status_code == 200
    region.refresh_from_db()
    assert region.box == [5, 6, 50.5, 60]
    bad = action(client, region, action="box", x0=5, y0=6, x1=5000, y1=60)
    assert bad.status_code == 422
    assert "outside" in bad.content.decode()
    region.refresh_from_db()
    assert region.version == 2


def test_a_drawn_region_can_be_undone_and_an_accept_undone_as_a_new_version(
    client_as, annotator, image
):
    client = client_as(annotator)
    created = client.post(
        reverse("regions:region_create", args=[image.pk]),
        {"x0": 200, "y0": 100, "x1": 300, "y1": 200},
        **HX,
    )
    assert created.status_code == 200
    new = Region.objects.get(image=image, origin="human")
    assert 'hx-swap-oob="beforeend:#region-rows"' in created.content.decode()
    change = json.loads(created["HX-Trigger"])["fgam:changed"]["changes"]
    undone = client.post(reverse("regions:undo", args=[image.pk]), {"change": change}, **HX)
    assert undone.status_code == 200
    assert f'id="row-{new.pk}" hx-swap-oob="delete"' in undone.content.decode()
    assert not Region.objects.filter(pk=new.pk).exists()

    region = image.regions.order_by("pk").first()
    accepted = action(client, region, action="accept")
    change = json.loads(accepted["HX-Trigger"])["fgam:changed"]["changes"]
    client.post(reverse("regions:undo", args=[image.pk]), {"change": change}, **HX)
    region.refresh_from_db()
    assert (region.status, region.version) == ("pending", 3)
    assert [c.after["status"] for c in RegionChange.objects.filter(region=region)] == [
        "accepted",
        "pending",
    ]


def test_undo_refuses_when_someone_changed_the_region_since(client_as, annotator, image):
    region = image.regions.order_by("pk").first()
    client = client_as(annotator)
    change = json.loads(action(client, region, action="accept")["HX-Trigger"])["fgam:changed"]
    bob = UserFactory(username="bob", roles=["annotator"])
    region.refresh_from_db()
    action(client_as(bob), region, action="reject")
    client = client_as(annotator)
    response = client.post(
        reverse("regions:undo", args=[image.pk]), {"change": change["changes"]}, **HX
    )
    assert response.status_code == 409
    region.refresh_from_db()
    assert region.status == "rejected"


def test_accept_all_accepts_only_the_pending_regions(client_as, annotator, image):
    first = image.regions.order_by("pk").first()
    action(client_as(annotator), first, action="reject")
    response = client_as(annotator).post(reverse("regions:accept_all", args=[image.pk]), **HX)
    assert response.status_code == 200
    statuses = dict(image.regions.values_list("pk", "status"))
    assert statuses.pop(first.pk) == "rejected"
    assert set(statuses.values()) == {"accepted"}


def test_history_lists_who_changed_what_and_restores_as_a_new_version(client_as, annotator, image):
    region = image.regions.order_by("pk").first()
    client = client_as(annotator)
    action(client, region, action="edit", caption="first rewrite")
    region.refresh_from_db()
    action(client, region, action="edit", caption="second rewrite")
    response = client.get(reverse("regions:history", args=[region.pk]), **HX)
    html = response.content.decode()
    assert "ann" in html and "first rewrite" in html and "second rewrite" in html
    first_change = RegionChange.objects.filter(region=region).order_by("pk").first()
    restored = client.post(reverse("regions:restore", args=[first_change.pk]), {"version": 3}, **HX)
    assert restored.status_code == 200
    region.refresh_from_db()
    assert (region.caption, region.version) == ("first rewrite", 4)
    assert RegionChange.objects.filter(region=region).count() == 3
    # Without htmx the history is a page of its own.
    assert client.get(reverse("regions:history", args=[region.pk])).status_code == 200


def test_start_leases_the_next_image_and_next_moves_on(client_as, annotator, dataset, run):
    images = [ImageFactory(dataset=dataset) for _ in range(2)]
    detector_regions(images[0], run, [0.9])
    detector_regions(images[1], run, [0.36])  # nearest the threshold: first
    client = client_as(annotator)
    response = client.post(reverse("regions:start", args=[dataset.name]))
    assert response.status_code == 302
    assert response["Location"] == reverse("regions:review_image", args=[images[1].pk])
    assert Lease.objects.get(user=annotator).image == images[1]
    response = client.post(reverse("regions:next_image", args=[images[1].pk]))
    assert response["Location"] == reverse("regions:review_image", args=[images[0].pk])
    assert list(Lease.objects.values_list("image_id", flat=True)) == [images[0].pk]
    # A skipped image still has pending regions, so it comes round again...
    response = client.post(reverse("regions:next_image", args=[images[0].pk]))
    assert response["Location"] == reverse("regions:review_image", args=[images[1].pk])
    # ...until everything is reviewed.
    for image in images:
        client.post(reverse("regions:accept_all", args=[image.pk]), **HX)
    response = client.post(reverse("regions:next_image", args=[images[1].pk]))
    assert "empty=1" in response["Location"]
    assert "No image with pending regions" in client.get(response["Location"]).content.decode()


def test_the_queue_page_counts_what_the_filters_match(client_as, annotator, image):
    client = client_as(annotator)
    url = reverse("regions:queue", args=[image.dataset.name])
    assert "2 pending regions on 1 image" in client.get(url).content.decode()
    assert "1 pending region on 1 image" in client.get(url, {"min_score": 0.8}).content.decode()
    assert client.get(url, {"min_score": "lots"}).status_code == 404


def test_state_changes_need_the_csrf_token(annotator, image):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    region = image.regions.first()
    assert action(client, region, action="accept").status_code == 403
    region.refresh_from_db()
    assert region.status == "pending"


def test_a_human_region_can_be_deleted_and_a_detector_one_cannot(client_as, annotator, image):
    client = client_as(annotator)
    human = RegionFactory(image=image, origin="human")
    url = reverse("regions:region_delete", args=[human.pk])
    assert client.post(url, {"version": 1}, **HX).status_code == 200
    assert not Region.objects.filter(pk=human.pk).exists()
    detector = image.regions.first()
    url = reverse("regions:region_delete", args=[detector.pk])
    assert client.post(url, {"version": 1}, **HX).status_code == 422
    assert Region.objects.filter(pk=detector.pk).exists()


def test_the_progress_page_counts_reviews_and_refreshes_itself(client_as, annotator, image):
    client = client_as(annotator)
    action(client, image.regions.order_by("pk").first(), action="accept")
    url = reverse("regions:progress", args=[image.dataset.name])
    html = client.get(url).content.decode()
    assert 'hx-trigger="every 10s"' in html
    assert 'data-testid="count-accepted">1<' in html
    assert 'data-testid="count-pending">1<' in html
    fragment = client.get(url, **HX).content.decode()
    assert "<html" not in fragment and ">ann<" in fragment


def test_a_box_move_flags_and_clears_the_other_region_it_duplicates(client_as, annotator, dataset):
    image = ImageFactory(dataset=dataset, width=640, height=480)
    a = RegionFactory(image=image, phrase="car", caption="a car", x0=10, y0=10, x1=50, y1=50)
    b = RegionFactory(image=image, phrase="car", caption="a car", x0=200, y0=10, x1=240, y1=50)
    client = client_as(annotator)
    moved = action(client, b, action="box", x0=11, y0=10, x1=51, y1=50)
    html = moved.content.decode()
    # Both rows come back, both flagged; the counts do not (a box cannot move them).
    assert f'<tr id="row-{a.pk}"' in html and f'<tr id="row-{b.pk}"' in html
    assert html.count('data-testid="flag"') == 2 and 'id="progress"' not in html
    a.refresh_from_db()
    assert a.flagged and f"duplicate of #{b.pk}" in a.flag_reason
    b.refresh_from_db()
    action(client, b, action="box", x0=300, y0=10, x1=340, y1=50)
    a.refresh_from_db()
    assert not a.flagged


def test_a_caption_rewrite_lints_only_its_region_and_sends_only_its_row(
    client_as, annotator, image
):
    first, second = image.regions.order_by("pk")
    response = action(client_as(annotator), first, action="edit", caption="a cat on the left")
    html = response.content.decode()
    assert html.count("<tr ") == 1 and 'data-testid="flag"' in html
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.flagged and 'caption does not mention "red car"' in first.flag_reason
    assert not second.flagged


def test_a_save_runs_the_same_number_of_queries_for_10_and_300_regions(
    client_as, annotator, dataset, run
):
    client = client_as(annotator)
    counts = {}
    for n in (10, 300):
        image = ImageFactory(dataset=dataset)
        regions = detector_regions(image, run, [0.5] * n)
        action(client, regions[0], action="accept")  # warm the session
        for kind, data in (("accept", {"action": "accept"}), ("caption", {"action": "edit"})):
            region = regions[2 if kind == "accept" else 3]
            data.setdefault("caption", "a red car parked on the left")
            with CaptureQueriesContext(connection) as queries:
                assert action(client, region, **data).status_code == 200
            counts[kind, n] = len(queries)
    assert counts["accept", 10] == counts["accept", 300], counts
    assert counts["caption", 10] == counts["caption", 300], counts


def test_run_names_from_models_are_escaped_in_the_provenance(client_as, annotator, dataset):
    evil = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, model_id='x" onmouseover="alert(3)',
        parameters={"box_threshold": 0.3},
    )  # fmt: skip
    image = ImageFactory(dataset=dataset)
    detector_regions(image, evil, [0.5])
    html = client_as(annotator).get(reverse("regions:review_image", args=[image.pk]))
    html = html.content.decode()
    assert 'onmouseover="alert(3)' not in html
    assert "x&quot; onmouseover=&quot;alert(3)" in html
