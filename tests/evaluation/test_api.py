"""The REST API: a curator sets a round up and reads results; raters rate, blind."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.catalog.factories import DatasetFactory, ImageFactory, UserFactory
from webapp.evaluation.models import Assignment, Round

pytestmark = pytest.mark.django_db


def jsonl(rows, name="f.jsonl"):
    return SimpleUploadedFile(name, "".join(json.dumps(r) + "\n" for r in rows).encode())


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_a_round_from_creation_to_results_through_the_api(curator):
    images = [ImageFactory(dataset=DatasetFactory()) for _ in range(4)]
    api = api_for(curator)
    made = api.post(
        "/api/evaluation/rounds/", {"name": "api round", "raters_per_item": 2}, format="json"
    )
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    items = [
        {"id": f"i{n}", "image": im.sha256, "question": f"Q{n}?"} for n, im in enumerate(images)
    ]
    assert (
        api.post(
            f"/api/evaluation/rounds/{pk}/items/", {"file": jsonl(items)}, format="multipart"
        ).json()["n_items"]
        == 4
    )
    for name in ("A", "B"):
        rows = [{"id": f"i{n}", "response": f"A dog, answer {n}"} for n in range(4)]
        added = api.post(
            f"/api/evaluation/rounds/{pk}/systems/",
            {"name": name, "file": jsonl(rows)},
            format="multipart",
        )
        assert added.status_code == 201 and added.json()["n_responses"] == 4
    bad = api.post(
        f"/api/evaluation/rounds/{pk}/systems/",
        {"name": "C", "file": jsonl([{"id": "nope", "response": "x"}], "c.jsonl")},
        format="multipart",
    )
    assert bad.status_code == 400 and "c.jsonl line 1" in bad.json()["detail"]
    assert api.get(f"/api/evaluation/rounds/{pk}/leaks/").json() == {"problems": [], "leaks": []}
    opened = api.post(f"/api/evaluation/rounds/{pk}/open/", {}, format="json")
    assert opened.json()["status"] == "open"
    assert Assignment.objects.filter(round_id=pk).count() == 8

    raters = [api_for(UserFactory(roles=["rater"])) for _ in range(3)]
    done = 0
    for rater in raters:
        while True:
            got = rater.post("/api/evaluation/assignments/next/", {"round": pk}, format="json")
            if got.status_code == 204:
                break
            body = got.json()
            ratings = [
                {"slot": r["slot"], "scores": {"localization": 3, "coherence": 4, "quality": 5}}
                for r in body["responses"]
            ]
            saved = rater.post(
                f"/api/evaluation/assignments/{body['id']}/ratings/",
                {"ratings": ratings},
                format="json",
            )
            assert saved.status_code == 200 and saved.json()["status"] == "done"
            done += 1
    assert done == 8  # 4 items x 2 raters, whoever asked first
    closed = api.post(f"/api/evaluation/rounds/{pk}/close/")
    assert closed.json()["status"] == "closed"
    results = api.get(f"/api/evaluation/rounds/{pk}/results/").json()
    assert results["final"] is True and results["results"]["n_ratings"] == 16
    assert api.get(f"/api/evaluation/rounds/{pk}/").json()["systems"][0]["name"] == "A"
    # A closed round takes no more claims.
    late = raters[0].post("/api/evaluation/assignments/next/", {"round": pk}, format="json")
    assert late.status_code == 409


def test_a_missing_score_is_named(round_, rater):
    api = api_for(rater)
    body = api.post("/api/evaluation/assignments/next/", {"round": round_.pk}, format="json").json()
    ratings = [{"slot": s, "scores": {"localization": 3, "coherence": 4}} for s in (1, 2, 3)]
    answer = api.post(
        f"/api/evaluation/assignments/{body['id']}/ratings/", {"ratings": ratings}, format="json"
    )
    assert answer.status_code == 422
    assert answer.json()["detail"] == "Response 1: Overall quality is missing"
    assert Assignment.objects.get(pk=body["id"]).status == "pending"


def test_the_commands_set_up_and_report_a_round(db, tmp_path):
    images = [ImageFactory(dataset=DatasetFactory()) for _ in range(3)]
    (tmp_path / "items.jsonl").write_text(
        "".join(
            json.dumps({"id": n, "image": im.sha256, "question": "Q?"}) + "\n"
            for n, im in enumerate(images)
        )
    )
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": n, "response": f"{name}{n}"}) + "\n" for n in range(3))
        )
    out = io.StringIO()
    call_command("eval_round", "create", "--name", "cmd round", stdout=out)
    call_command(
        "eval_round", "items", "cmd round", "--file", str(tmp_path / "items.jsonl"), stdout=out
    )
    call_command(
        "eval_round",
        "system",
        "cmd round",
        "--name",
        "sys a",
        "--responses",
        str(tmp_path / "a.jsonl"),
        stdout=out,
    )
    call_command(
        "eval_round",
        "system",
        "cmd round",
        "--name",
        "sys b",
        "--responses",
        str(tmp_path / "b.jsonl"),
        stdout=out,
    )
    call_command("eval_round", "baseline", "cmd round", "--system", "sys a", stdout=out)
    call_command("eval_round", "open", "cmd round", stdout=out)
    assert "cmd round: open, 9 seats" in out.getvalue()
    report = io.StringIO()
    call_command(
        "eval_round", "results", "cmd round", "--table", "table5", "--format", "md", stdout=report
    )
    assert "sys a" in report.getvalue() and "|" in report.getvalue()
    assert Round.objects.get(name="cmd round").baseline.name == "sys a"
