"""The command line, the API and the pages, each over the "zoo" dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from tests.api.conftest import make_user
from training.probes.layout import ProbeSet as ProbeFolder
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.probes.models import ProbeSet

pytestmark = pytest.mark.django_db


def test_command_builds_with_the_lmms_eval_task_and_prints_the_folder(zoo, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "build_probes", "--dataset", "zoo", "--kind", "pope", "--split", "adversarial",
        "--images", "5", "--seed", "2", "--out", str(tmp_path / "sets"), stdout=out, stderr=err,
    )  # fmt: skip
    folder = Path(out.getvalue().strip())
    assert folder.parent == tmp_path / "sets"
    probes = ProbeFolder.open(folder, verify=True)
    assert probes.manifest["split"] == "adversarial" and probes.manifest["seed"] == 2
    assert (folder / "lmms_eval" / "task.yaml").is_file()  # the production path writes it
    assert "30 probes over 5 images (15 yes)" in err.getvalue()
    assert ProbeSet.objects.get().path == str(folder.resolve())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope", "--kind", "pope"], "no dataset named 'nope'"),
        (["--dataset", "zoo", "--kind", "pope"], "only 5 exhaustively reviewed image"),
        (["--dataset", "zoo", "--kind", "spatial", "--split", "popular"], "one split"),
    ],
)
def test_command_errors_are_clear(zoo, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("build_probes", *args, stdout=io.StringIO(), stderr=io.StringIO())


def api_client(*roles: str, name: str) -> APIClient:
    client = APIClient()
    client.force_login(make_user(name, *roles))
    return client


def test_api_curator_builds_everyone_reads(zoo, django_capture_on_commit_callbacks):
    curator = api_client(CURATOR, name="cur")
    body = {"datasets": ["zoo"], "kind": "pope", "split": "popular", "images": 5, "seed": 1}
    with django_capture_on_commit_callbacks(execute=True):
        response = curator.post("/api/probe-sets/", body, format="json")
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["status"] == "building" and created["split"] == "popular"
    reader = api_client(ANNOTATOR, name="ann")
    listed = reader.get("/api/probe-sets/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["id"] for row in rows] == [created["id"]]
    detail = reader.get(f"/api/probe-sets/{created['id']}/").json()
    assert detail["status"] == "ready" and detail["counts"]["probes"] == 30
    assert detail["manifest"]["content_sha256"] == detail["content_sha256"]
    assert reader.post("/api/probe-sets/", body, format="json").status_code == 403


def test_api_refusals_name_the_field(zoo, django_capture_on_commit_callbacks):
    curator = api_client(CURATOR, name="cur")
    bad = curator.post("/api/probe-sets/", {"datasets": ["nope"], "kind": "pope"}, format="json")
    assert bad.status_code == 400 and "no dataset named" in json.dumps(bad.json())
    bad = curator.post("/api/probe-sets/", {"datasets": ["zoo"], "kind": "x"}, format="json")
    assert bad.status_code == 400 and "kind" in bad.json()
    # Too few reviewed images: accepted (202), then failed with the reason on the row.
    with django_capture_on_commit_callbacks(execute=True):
        made = curator.post(
            "/api/probe-sets/", {"datasets": ["zoo"], "kind": "pope"}, format="json"
        )
    failed = curator.get(f"/api/probe-sets/{made.json()['id']}/").json()
    assert failed["status"] == "failed" and "only 5 exhaustively reviewed" in failed["error"]
    assert curator.get("/api/probe-sets/?status=failed").json()


def test_pages_list_build_and_detail(zoo, django_capture_on_commit_callbacks):
    client = Client()
    client.force_login(make_user("cur", CURATOR))
    page = client.get("/probe-sets/")
    assert page.status_code == 200 and b"Build a probe set" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/probe-sets/build/",
            {"datasets": ["zoo"], "kind": "pope", "split": "random", "images": "5",
             "per_image": "3", "seed": "4"},
        )  # fmt: skip
    probe_set = ProbeSet.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/probe-sets/{probe_set.pk}/"
    detail = client.get(response["Location"])
    assert detail.status_code == 200
    text = detail.content.decode()
    assert "30 (15 yes, 15 no) over 5 images" in text and "in the image?" in text
    assert probe_set.content_sha256 in text
    assert f'href="/benchmarks/new/?probe_set={probe_set.pk}"' in text  # score a model on it
    listing = client.get("/probe-sets/").content.decode()
    assert probe_set.set_id in listing

    refused = client.post("/probe-sets/build/", {"datasets": ["nope"], "kind": "pope"})
    assert refused.status_code == 302
    assert "no dataset named" in client.get("/probe-sets/").content.decode()

    annotator = Client()
    annotator.force_login(make_user("ann", ANNOTATOR))
    assert b"Build a probe set" not in annotator.get("/probe-sets/").content
    assert b"/benchmarks/new/" not in annotator.get(f"/probe-sets/{probe_set.pk}/").content
    assert annotator.post("/probe-sets/build/", {"datasets": ["zoo"]}).status_code == 403
