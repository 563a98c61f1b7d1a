"""Blindness: nothing a rater receives, page or API answer, names or identifies a system.

The round's systems have distinctive names (ZEBRA-SYSTEM-ALPHA ...), and their ids and their
responses' ids are numbers no page shows by chance; every rater-facing page and API answer,
through a whole rating session, is searched for any of them.
"""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from tests.evaluation.conftest import make_round
from webapp.evaluation.assignment import claim_next, response_order
from webapp.evaluation.models import Assignment, Response, System

FORM = {f"r{s}-{c}": "3" for s in (1, 2, 3) for c in ("localization", "coherence", "quality")}


def identities(round_) -> list[str]:
    """Every way a system could be named: name, slug, key, its id and its responses' ids."""
    found = []
    for system in System.objects.filter(round=round_):
        slug = re.sub(r"[^a-z0-9]+", "-", system.name.lower()).strip("-")
        found += [system.name, system.name.lower(), slug, system.key, str(system.pk)]
        found += [part for part in system.name.split("-") if part not in ("SYSTEM",)]
    found += [
        str(pk) for pk in Response.objects.filter(item__round=round_).values_list("pk", flat=True)
    ]
    return found


def assert_blind(text: str, round_, where: str) -> None:
    lowered = text.lower()
    for identity in identities(round_):
        assert identity.lower() not in lowered, f"{where} shows {identity!r}"


@pytest.fixture
def blind_round(db):
    return make_round(items=3, distinctive_ids=True)


def test_every_rater_page_is_blind(blind_round, rater, client_as):
    client = client_as(rater)
    pages = []
    pages.append(("index", client.get(reverse("evaluation:index"))))
    pages.append(("my round", client.get(reverse("evaluation:my_round", args=[blind_round.pk]))))
    started = client.post(reverse("evaluation:next_item", args=[blind_round.pk]))
    assert started.status_code == 302
    pages.append(("redirect", started))
    rate_url = started["Location"]
    pages.append(("rate", client.get(rate_url)))
    pages.append(("rate, missing a score", client.post(rate_url, {"r1-quality": "2"})))
    saved = client.post(rate_url, FORM)
    pages.append(("after saving", saved))
    pages.append(("rated item", client.get(rate_url)))
    pages.append(("revised", client.post(rate_url, FORM | {"r1-quality": "5", "r1-version": "1"})))
    pages.append(("next item", client.get(saved["Location"], follow=True)))
    done_page = client.get(reverse("evaluation:my_round", args=[blind_round.pk]))
    pages.append(("my round with a rated item", done_page))
    assert rate_url in done_page.content.decode()  # the rated item is listed for revision
    for where, response in pages:
        assert response.status_code in (200, 302, 422), where
        body = response.content.decode() + " " + response.get("Location", "")
        assert_blind(body, blind_round, where)
    # The page really showed the responses (so the check above had something to look at).
    assert "Response 3" in pages[3][1].content.decode()
    assert "Answer 0 to item" in pages[3][1].content.decode()


def test_every_rater_api_answer_is_blind(blind_round, rater, client_as):
    client = client_as(rater)
    answers = [
        ("rounds", client.get("/api/evaluation/rounds/")),
        ("round", client.get(f"/api/evaluation/rounds/{blind_round.pk}/")),
    ]
    claimed = client.post(
        "/api/evaluation/assignments/next/",
        {"round": blind_round.pk},
        content_type="application/json",
    )
    answers.append(("next", claimed))
    data = claimed.json()
    assert [r["slot"] for r in data["responses"]] == [1, 2, 3]
    url = f"/api/evaluation/assignments/{data['id']}/"
    answers.append(("detail", client.get(url)))
    ratings = [
        {"slot": s, "scores": {"localization": 4, "coherence": 4, "quality": 4}} for s in (1, 2, 3)
    ]
    answers.append(
        (
            "bad rating",
            client.post(
                url + "ratings/", {"ratings": ratings[:1]}, content_type="application/json"
            ),
        )
    )
    answers.append(
        (
            "rating",
            client.post(url + "ratings/", {"ratings": ratings}, content_type="application/json"),
        )
    )
    stale = [dict(r, version=7) for r in ratings]
    stale[0]["scores"] = {"localization": 1, "coherence": 1, "quality": 1}
    answers.append(
        (
            "stale",
            client.post(url + "ratings/", {"ratings": stale}, content_type="application/json"),
        )
    )
    answers.append(("mine", client.get("/api/evaluation/assignments/")))
    assert [a[1].status_code for a in answers] == [200, 200, 200, 200, 422, 200, 409, 200]
    for where, response in answers:
        assert_blind(json.dumps(response.json()), blind_round, where)


def test_raters_never_see_other_raters_ratings(blind_round, rater, client_as):
    from tests.catalog.factories import UserFactory

    other = UserFactory(username="otto", roles=["rater"])
    client = client_as(other)
    url = client.post(reverse("evaluation:next_item", args=[blind_round.pk]))["Location"]
    client.post(url, {k: "1" for k in FORM})
    mine = client_as(rater).get(url)
    assert mine.status_code == 404  # another rater's seat is not reachable at all
    api = client_as(rater).get(
        url.replace("/evaluation/assignments/", "/api/evaluation/assignments/")
    )
    assert api.status_code == 404


def test_the_order_does_not_follow_the_systems(db):
    round_ = make_round(items=12)
    systems = list(System.objects.filter(round=round_).order_by("pk"))
    first_positions = set()
    for rater_id in range(1, 6):
        for item in round_.items.all():
            ids = list(item.responses.values_list("pk", flat=True))
            order = response_order(
                seed=round_.seed, rater_id=rater_id, item_id=item.pk, response_ids=ids
            )
            system_of = dict(item.responses.values_list("pk", "system_id"))
            first_positions.add(
                order.index(next(pk for pk in order if system_of[pk] == systems[0].pk))
            )
    assert first_positions == {0, 1, 2}


def test_the_recorded_order_is_what_the_page_shows(blind_round, rater, client_as):
    assignment = claim_next(blind_round, rater)
    page = client_as(rater).get(reverse("evaluation:rate", args=[assignment.pk])).content.decode()
    texts = dict(Response.objects.filter(pk__in=assignment.order).values_list("pk", "text"))
    positions = [page.index(texts[pk]) for pk in assignment.order]
    assert positions == sorted(positions)
    assert Assignment.objects.get(pk=assignment.pk).order == assignment.order
