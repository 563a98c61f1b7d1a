"""The version page in headless Chromium: the progress bar follows the cut through htmx
polling, the page reloads itself once the version is ready, and the job form swaps in the
defaults of the chosen kind."""

from __future__ import annotations

import pytest

from tests.browser.test_pages import PASSWORD, chromium, page, shots  # noqa: F401 (fixtures)
from tests.catalog.factories import DatasetFactory, UserFactory
from webapp.exports.models import DatasetVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_progress_bar_follows_the_cut_and_the_job_form_follows_the_kind(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    tmp_path,
):
    UserFactory(username="curie", roles=["curator"])
    version = DatasetVersion.objects.create(
        name="20261127-230000-abcdef", status="running", progress_phase="stage1",
        progress_done=250, progress_total=1000, location=str(tmp_path), storage="path",
    )  # fmt: skip
    version.datasets.set([DatasetFactory(name="street")])
    page.goto(f"{live_server.url}/login/?next=/versions/{version.pk}/")
    page.fill("input[name=username]", "curie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/versions/{version.pk}/")
    counts = page.get_by_test_id("progress-counts")
    assert counts.inner_text() == "250 of 1000 rows written"
    assert page.locator("#version-progress .progress").get_attribute("aria-valuenow") == "25.0"

    DatasetVersion.objects.filter(pk=version.pk).update(
        progress_phase="trajectories", progress_done=600
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=progress-counts]').innerText.startsWith('600')",
        timeout=6000,
    )
    assert page.get_by_test_id("progress-phase").inner_text() == "trajectories"
    assert page.locator("#version-progress .p-done").evaluate("e => e.style.width") == "60%"
    page.screenshot(path=str(shots / "version-progress.png"), full_page=True)

    DatasetVersion.objects.filter(pk=version.pk).update(
        status="ready", progress_done=1000, content_sha256="f" * 64,
        counts={"stage1_images": 100, "stage1_regions": 900, "sft": 40},
    )  # fmt: skip
    page.wait_for_function(
        "document.querySelector('[data-testid=version-hash]').innerText.startsWith('ffff')",
        timeout=8000,
    )  # the poll answered HX-Refresh: the whole page now shows the ready version
    assert page.locator("#version-progress").get_attribute("hx-trigger") is None
    assert page.get_by_test_id("progress-counts").inner_text() == "1000 of 1000 rows written"

    config = page.get_by_test_id("job-config")
    assert '"beta": 0.5' in config.input_value()  # Stage-1 defaults first
    page.locator("select[name=kind]").focus()
    page.keyboard.press("ArrowDown")  # keyboard only: Stage-2 SFT
    page.wait_for_function(
        "document.querySelector('[data-testid=job-config]').value.includes('vision_tower')",
        timeout=6000,
    )
    assert '"beta"' not in config.input_value()
    assert page.locator("select[name=kind]").input_value() == "stage2_sft"
    page.screenshot(path=str(shots / "version-job-form.png"), full_page=True)
