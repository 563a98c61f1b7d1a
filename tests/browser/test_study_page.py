"""The study page in headless Chromium: created from the form, watched while its arms train
(the grid polls), and read when done (Table 2, the chart, the downloads)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.browser.test_pages import PASSWORD, chromium, page, shots  # noqa: F401 (fixtures)
from tests.catalog.factories import UserFactory
from tests.studies.conftest import (  # noqa: F401 (fixtures)
    study_models,
    study_probe_set,
    study_spec,
    study_version,
    study_version_dir,
)
from webapp.studies.models import Study
from webapp.studies.services import start_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_study_page_while_it_runs_and_when_it_is_done(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    study_models,  # noqa: F811
    study_version,  # noqa: F811
    study_probe_set,  # noqa: F811
    tmp_path,
    settings,
):
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    settings.FGAM_BENCHMARK_DIR = str(tmp_path / "benchmarks")
    UserFactory(username="cora", roles=["curator"])
    spec = study_spec("browser-study", study_models, study_probe_set, arms=["base", "no_stage1"])

    page.goto(f"{live_server.url}/login/?next=/studies/")
    page.fill("input[name=username]", "cora")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/studies/")
    page.fill("textarea[name=study_json]", json.dumps(spec))
    page.click("#study-new button[type=submit]")
    study = Study.objects.get(name="browser-study")
    page.wait_for_url(f"{live_server.url}/studies/{study.pk}/")
    assert page.get_by_test_id("study-status").inner_text() == "draft"
    page.screenshot(path=str(shots / "study-draft.png"), full_page=True)

    # Tasks run eagerly here: the study runs in a thread while the page polls.
    runner = threading.Thread(target=start_study, kwargs={"study": study})
    runner.start()
    deadline = time.monotonic() + 30
    while not Study.objects.filter(pk=study.pk, status="running").exists():
        assert time.monotonic() < deadline, "the study did not start"
        time.sleep(0.1)
    page.reload()
    page.wait_for_selector('[data-testid="step-status"]:text("running")', timeout=120_000)
    assert page.get_by_test_id("study-status").inner_text() == "running"
    page.screenshot(path=str(shots / "study-running.png"), full_page=True)

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and runner.is_alive():
        runner.join(timeout=1)
    assert not runner.is_alive()
    # The polling partial swaps the finished grid in by itself; no reload.
    page.wait_for_selector('[data-testid="study-status"]:text("done")', timeout=20_000)
    statuses = page.locator('[data-testid="step-status"]').all_inner_texts()
    assert statuses == ["succeeded"] * 3, statuses
    table = page.locator("#study-table2 table")
    assert "base (base)" in table.inner_text() and "no_stage1" in table.inner_text()
    assert page.locator("#study-all-arms svg rect[data-arm]").count() == 2
    assert study.version.content_sha256 in page.get_by_test_id("version-sha").inner_text()
    page.screenshot(path=str(shots / "study-done.png"), full_page=True)
    with page.expect_download() as download:
        page.click('a[data-format="csv"]')
    assert download.value.suggested_filename == "browser-study-table2.csv"
