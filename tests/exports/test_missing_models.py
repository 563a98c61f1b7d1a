"""A model that is not there fails fast, in one line, before and while a job runs (issue 16).

The hub is made unreachable by pointing ``HF_ENDPOINT`` at a closed loopback port, and
separately by ``HF_HUB_OFFLINE=1``; the model is a hub id that is not in the (empty) cache.
"""

from __future__ import annotations

import socket
import time

import pytest
from django.test import Client

from tests.api.conftest import make_user
from tests.exports.test_training_jobs import ready_version
from training.models_available import ModelNotAvailable, check_model
from webapp.core.roles import CURATOR
from webapp.exports.models import TrainingJob
from webapp.exports.training_jobs import run_training_job, start_training_job

MISSING = "openai/clip-vit-large-patch14-336"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the block ends: connections are refused


@pytest.fixture(params=["closed-port", "offline"])
def no_hub(request, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    if request.param == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return request.param


def test_the_check_answers_in_one_line_within_5_s(no_hub, tmp_path):
    started = time.monotonic()
    with pytest.raises(ModelNotAvailable) as caught:
        check_model(MISSING, role="Stage-1 CLIP")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert MISSING in message and "empty-cache" in message  # the model and where it looked
    assert f"huggingface-cli download {MISSING}" in message and "make_demo_models" in message
    assert ("HF_HUB_OFFLINE=1" in message) == (no_hub == "offline")
    with pytest.raises(ModelNotAvailable, match="there is no folder"):
        check_model(str(tmp_path / "nothing"), role="detector")
    assert check_model("http://127.0.0.1:1/v1#m") == "http://127.0.0.1:1/v1#m"  # endpoint's own


@pytest.mark.django_db
def test_the_job_form_refuses_a_missing_model_before_queueing(no_hub, reviewed, tmp_path, settings):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    version = ready_version(tmp_path)
    browser = Client()
    browser.force_login(make_user("cur", CURATOR))
    started = time.monotonic()
    page = browser.post(
        f"/versions/{version.pk}/train/", {"kind": "stage1", "config": "{}"}, follow=True
    ).content.decode()
    assert time.monotonic() - started < 5
    assert "Cannot start the job: cannot load" in page and MISSING in page
    assert "Traceback" not in page
    assert not TrainingJob.objects.exists()  # rolled back: nothing was queued


@pytest.mark.django_db
def test_a_job_that_meets_a_missing_model_fails_in_seconds_with_one_line(
    no_hub, reviewed, tmp_path, settings, monkeypatch
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    monkeypatch.setattr("webapp.exports.training_jobs._enqueue", lambda job_id: None)
    version = ready_version(tmp_path)
    job = start_training_job(version=version, config={"model": MISSING})
    started = time.monotonic()
    run_training_job(job_id=job.pk)
    assert time.monotonic() - started < 5
    job.refresh_from_db()
    assert job.status == "failed" and job.returncode == 2
    assert job.error.startswith("exit code 2: cannot load Stage-1 CLIP") and MISSING in job.error
    assert "Traceback" not in job.log_tail
    browser = Client()
    browser.force_login(make_user("cur2", CURATOR))
    html = browser.get(f"/versions/jobs/{job.pk}/").content.decode()
    assert "Traceback" not in html and '<pre class="log small">' in html
    assert "huggingface-cli download" in html
