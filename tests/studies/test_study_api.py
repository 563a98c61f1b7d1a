"""Creating and reading studies through the API and ``manage.py study``, and what each role may
do; nothing is started here (no job runs)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.api.conftest import make_user
from tests.studies.conftest import study_spec
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.studies.models import Study


def client_for(name: str, role: str) -> Client:
    client = Client()
    client.force_login(make_user(name, role))
    return client


@pytest.mark.django_db
def test_curators_create_studies_through_the_api_and_editors_read_them(
    study_models, study_version, study_probe_set
):
    curator, annotator = client_for("cur", CURATOR), client_for("ann", ANNOTATOR)
    spec = study_spec("api-study", study_models, study_probe_set)
    body = json.dumps({"spec": spec})
    refused = annotator.post("/api/studies/", body, content_type="application/json")
    assert refused.status_code == 403
    made = curator.post("/api/studies/", body, content_type="application/json")
    assert made.status_code == 201, made.content
    data = made.json()
    assert data["status"] == "draft" and data["version"] == "study-v1"
    kinds = [step["kind"] for step in data["steps"]]
    assert kinds.count("stage1") == 1 and kinds.count("bench") == 4 and len(kinds) == 8
    assert annotator.get("/api/studies/").json()["results"][0]["name"] == "api-study"
    assert annotator.get(f"/api/studies/{data['id']}/").json()["scores"][0]["f1"] is None

    again = curator.post("/api/studies/", body, content_type="application/json")
    assert again.status_code == 400 and "exists already" in again.content.decode()
    bad = {**spec, "name": "bad", "settings": {"sft": {"max_stepz": 2}}}
    answer = curator.post("/api/studies/", json.dumps({"spec": bad}), "application/json")
    assert answer.status_code == 400 and "max_stepz" in answer.content.decode()
    Study.objects.filter(pk=data["id"]).update(status="running")
    busy = curator.post(f"/api/studies/{data['id']}/start/")
    assert busy.status_code == 409 and "running already" in busy.json()["detail"]


@pytest.mark.django_db
def test_the_command_creates_a_study_from_presets_and_prints_its_status(
    study_models, study_version, study_probe_set
):
    out = StringIO()
    call_command(
        "study", "create", "--name", "cmd-study", "--version", str(study_version.pk),
        "--preset", "table2", "--preset", "figure2", "--model", str(study_models["llava"]),
        "--rm", str(study_models["rm"]), "--clip", str(study_models["clip"]),
        "--probe-set", study_probe_set.set_id, stdout=out,
    )  # fmt: skip
    study = Study.objects.get(name="cmd-study")
    # "full" and "hybrid" (Figure 2) are one arm: 1 Stage-1 run, hybrid x3 (no_stage1, full,
    # then sft_only and rl_only), a tower, and 4 + 2 bench runs (hybrid shares full's).
    kinds = list(study.steps.values_list("kind", flat=True))
    assert kinds.count("stage1") == 1 and kinds.count("bench") == 6, kinds
    shared = [step.arms for step in study.steps.filter(kind="bench") if "full" in step.arms]
    assert shared == [["full", "hybrid"]]
    assert "study cmd-study: 10 steps" in out.getvalue() or "steps" in out.getvalue()
    status = StringIO()
    call_command("study", "status", "cmd-study", "--json", stdout=status)
    assert json.loads(status.getvalue())["status"] == "draft"
    with pytest.raises(CommandError, match="no failed step"):
        call_command("study", "retry", "cmd-study")
    with pytest.raises(CommandError, match="no study named"):
        call_command("study", "start", "nope")


@pytest.mark.django_db
def test_the_study_list_form_creates_a_study_and_reports_a_bad_one(
    study_models, study_version, study_probe_set
):
    curator = client_for("cur", CURATOR)
    form = {
        "name": "form-study", "version": study_version.pk, "presets": ["table2"],
        "model": str(study_models["llava"]), "rm": str(study_models["rm"]),
        "clip": str(study_models["clip"]), "probe_sets": [study_probe_set.pk],
    }  # fmt: skip
    answer = curator.post("/studies/create/", form)
    study = Study.objects.get(name="form-study")
    assert answer.status_code == 302 and answer["Location"] == f"/studies/{study.pk}/"
    page = curator.get(f"/studies/{study.pk}/").content.decode()
    assert page.count('data-testid="step-status"') == 2 + 3 + 4
    assert study_version.content_sha256 in page
    bad = curator.post("/studies/create/", {**form, "name": "x2", "presets": ["table9"]})
    assert bad.status_code == 422 and "unknown arm preset" in bad.content.decode()
    annotator = client_for("ann", ANNOTATOR)
    assert annotator.post("/studies/create/", form).status_code == 403
    assert "form-study" in annotator.get("/studies/").content.decode()
