"""Who sees what: curators set up and read results; raters rate; annotators see nothing here."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.evaluation.assignment import claim_next

CURATOR_PAGES = [
    ("evaluation:round_new", False),
    ("evaluation:round_detail", True),
    ("evaluation:results", True),
    ("evaluation:results_chart", True),
]


def curator_urls(round_):
    urls = [reverse(name, args=[round_.pk] if with_pk else []) for name, with_pk in CURATOR_PAGES]
    urls.append(reverse("evaluation:results_download", args=[round_.pk, "table5", "csv"]))
    return urls


@pytest.mark.parametrize("index", range(5))
def test_raters_get_403_on_curator_pages(round_, rater, client_as, index):
    url = curator_urls(round_)[index]
    assert client_as(rater).get(url).status_code == 403


def test_raters_cannot_change_a_round(round_, rater, client_as):
    client = client_as(rater)
    for name in ("round_open", "round_close", "items_sample", "system_add", "baseline"):
        assert client.post(reverse(f"evaluation:{name}", args=[round_.pk])).status_code == 403
    system = round_.systems.first()
    assert client.post(reverse("evaluation:responses_import", args=[system.pk])).status_code == 403
    assert client.post(reverse("evaluation:generate", args=[system.pk])).status_code == 403


def test_raters_get_403_from_curator_api_endpoints(round_, rater, client_as):
    client = client_as(rater)
    assert client.get(f"/api/evaluation/rounds/{round_.pk}/results/").status_code == 403
    assert client.get(f"/api/evaluation/rounds/{round_.pk}/leaks/").status_code == 403
    assert client.post("/api/evaluation/rounds/", {"name": "x"}).status_code == 403
    assert client.post(f"/api/evaluation/rounds/{round_.pk}/close/").status_code == 403
    system = round_.systems.first()
    assert client.post(f"/api/evaluation/systems/{system.pk}/generate/", {}).status_code == 403


def test_raters_get_403_on_the_review_pages(rater, client_as):
    assert client_as(rater).get(reverse("regions:index")).status_code == 403


def test_annotators_see_nothing_of_evaluation(round_, annotator, client_as, rater):
    client = client_as(annotator)
    assert client.get(reverse("evaluation:index")).status_code == 403
    for url in curator_urls(round_):
        assert client.get(url).status_code == 403
    assert client.post(reverse("evaluation:next_item", args=[round_.pk])).status_code == 403
    seat = claim_next(round_, rater)
    assert client.get(reverse("evaluation:rate", args=[seat.pk])).status_code == 403
    assert client.get("/api/evaluation/rounds/").status_code == 403
    assert client.post("/api/evaluation/assignments/next/", {"round": round_.pk}).status_code == 403


def test_curators_who_are_not_raters_cannot_rate(round_, curator, client_as):
    assert (
        client_as(curator).post(reverse("evaluation:next_item", args=[round_.pk])).status_code
        == 403
    )


def test_anonymous_people_are_sent_to_log_in(round_, client):
    response = client.get(reverse("evaluation:index"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.get("/api/evaluation/rounds/").status_code in (401, 403)
