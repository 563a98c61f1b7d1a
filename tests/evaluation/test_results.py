"""The results pages: live while the round is open, frozen at close, with downloads."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.catalog.factories import UserFactory
from tests.evaluation.conftest import SYSTEM_NAMES, make_round
from webapp.evaluation import services
from webapp.evaluation.assignment import RatingInput, claim_next, submit_ratings
from webapp.evaluation.models import Response, Round, System


def rate_everything(round_, *, hallucinating: str = "ZEBRA-SYSTEM-ALPHA") -> None:
    """Three raters score each system 2, 3, 4 (in the order systems were added) on every
    criterion; the named system's responses are all marked as hallucinations (object)."""
    systems = {s.pk: n for n, s in enumerate(System.objects.filter(round=round_).order_by("pk"))}
    names = dict(System.objects.filter(round=round_).values_list("pk", "name"))
    system_of = dict(Response.objects.filter(item__round=round_).values_list("pk", "system_id"))
    for n in range(3):
        user = UserFactory(username=f"rater{n}", roles=["rater"])
        while (seat := claim_next(round_, user)) is not None:
            inputs = []
            for slot, response_id in enumerate(seat.order, start=1):
                system = system_of[response_id]
                value = 2 + systems[system]
                bad = names[system] == hallucinating
                scores = {"localization": value, "coherence": value, "quality": value}
                inputs.append(
                    RatingInput(
                        slot=slot, scores=scores, hallucination=bad,
                        error_types={"object"} if bad else set(),
                    )
                )  # fmt: skip
            submit_ratings(assignment_id=seat.pk, rater=user, inputs=inputs)


@pytest.fixture
def rated_round(db):
    round_ = make_round(items=6)
    services.set_baseline(round_=round_, system=round_.systems.get(name=SYSTEM_NAMES[0]))
    rate_everything(round_)
    return round_


def test_the_results_page_shows_table5_table3_and_the_chart(rated_round, curator, client_as):
    page = client_as(curator).get(reverse("evaluation:results", args=[rated_round.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    for name in SYSTEM_NAMES:
        assert name in html
    assert "2.00" in html and "3.00" in html and "4.00" in html  # the three systems' means
    assert "100.0" in html  # the hallucinating system's rate
    assert "<svg" in html and 'id="table-table3"' in html and 'id="table-agreement"' in html
    assert 'hx-trigger="every 10s"' in html  # live while open


def test_polling_gets_only_the_fragment(rated_round, curator, client_as):
    page = client_as(curator).get(
        reverse("evaluation:results", args=[rated_round.pk]), headers={"HX-Request": "true"}
    )
    html = page.content.decode()
    assert "<html" not in html and "ZEBRA-SYSTEM-ALPHA" in html
    assert "HX-Request" in page["Vary"]


@pytest.mark.parametrize("fmt", ["csv", "md", "tex"])
def test_each_table_downloads_in_each_format(rated_round, curator, client_as, fmt):
    client = client_as(curator)
    for table in ("table5", "table3", "pairwise", "agreement", "rater_bias"):
        answer = client.get(
            reverse("evaluation:results_download", args=[rated_round.pk, table, fmt])
        )
        assert answer.status_code == 200, table
        assert f"-{table}.{fmt}" in answer["Content-Disposition"]
        body = answer.content.decode()
        if table in ("table5", "table3", "pairwise"):
            assert "QUOKKA-SYSTEM-BETA" in body, (table, fmt)


def test_table5_csv_has_the_means(rated_round, curator, client_as):
    csv = (
        client_as(curator)
        .get(reverse("evaluation:results_download", args=[rated_round.pk, "table5", "csv"]))
        .content.decode()
    )
    lines = {line.split(",")[0]: line for line in csv.splitlines()}
    # mean, CI low, CI high per column: every rater gave 4; hallucination rate (%) is 0.
    values = [float(v) for v in lines["NARWHAL-SYSTEM-GAMMA"].split(",")[1:]]
    assert values == [4, 4, 4, 4, 4, 4, 0, 0, 0, 4, 4, 4]
    alpha = [float(v) for v in lines["ZEBRA-SYSTEM-ALPHA"].split(",")[1:]]
    assert alpha[6:9] == [100, 100, 100] and alpha[:3] == [2, 2, 2]


def test_closing_freezes_the_results(rated_round, curator, client_as):
    services.close_round(round_=rated_round)
    rated_round.refresh_from_db()
    assert rated_round.results["n_ratings"] == 6 * 3 * 3
    assert rated_round.results["systems"] == list(
        rated_round.systems.order_by("pk").values_list("key", flat=True)
    )
    html = (
        client_as(curator)
        .get(reverse("evaluation:results", args=[rated_round.pk]))
        .content.decode()
    )
    assert "final" in html and "every 10s" not in html


def test_the_api_answers_the_results_to_curators(rated_round, curator, client_as):
    data = client_as(curator).get(f"/api/evaluation/rounds/{rated_round.pk}/results/").json()
    assert data["final"] is False
    assert sorted(data["systems"].values()) == sorted(SYSTEM_NAMES)
    alpha = next(k for k, v in data["systems"].items() if v == "ZEBRA-SYSTEM-ALPHA")
    assert data["results"]["likert"][alpha]["quality"]["value"] == pytest.approx(2.0)
    assert data["results"]["hallucination"][alpha]["value"] == pytest.approx(100.0)
    assert data["progress"]["done"] == data["progress"]["total"] == 18


def test_a_closed_round_takes_no_more_ratings(rated_round, client_as):
    services.close_round(round_=rated_round)
    rater = UserFactory(username="rater0")
    seat = rater.evaluation_assignments.first()
    answer = client_as(rater).post(
        reverse("evaluation:rate", args=[seat.pk]),
        {f"r{s}-{c}": "1" for s in (1, 2, 3) for c in ("localization", "coherence", "quality")},
    )
    assert answer.status_code == 409
    assert Round.objects.get(pk=rated_round.pk).status == "closed"
    assert seat.ratings.filter(scores__quality=1).count() == 0
