"""The run page in headless Chromium: the progress bar follows the run through htmx polling,
and a curator cancels it with the button."""

from __future__ import annotations

import pytest

from tests.browser.test_pages import PASSWORD, chromium, page, shots  # noqa: F401 (fixtures)
from tests.catalog.factories import DatasetFactory, UserFactory
from webapp.jobs.models import Run, RunBatch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_progress_bar_follows_the_run_and_a_curator_cancels_it(page, live_server, shots):  # noqa: F811
    UserFactory(username="curie", roles=["curator"])
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL,
        dataset=DatasetFactory(name="scenes"),
        model_id="IDEA-Research/grounding-dino-tiny",
        status=Run.Status.RUNNING,
        total=200,
        done=40,
        parameters={"box_threshold": 0.35, "text_threshold": 0.25, "batch_size": 8},
    )
    RunBatch.objects.create(
        run=run,
        index=0,
        ids=[7],
        first_id=7,
        last_id=7,
        status="done",
        failed=1,
        errors=[{"id": 7, "error": "stored file 'images/ab/x.png' does not exist"}],
    )
    page.goto(f"{live_server.url}/login/?next=/runs/{run.pk}/")
    page.fill("input[name=username]", "curie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
    counts = page.get_by_test_id("run-counts")
    assert counts.inner_text() == "40 done of 200"
    bar = page.locator("#run-progress .progress")
    assert bar.get_attribute("aria-valuenow") == "20.0"

    Run.objects.filter(pk=run.pk).update(done=150, failed=1)
    page.wait_for_function(
        "document.querySelector('[data-testid=run-counts]').innerText.startsWith('150 done')",
        timeout=6000,
    )
    assert counts.inner_text() == "150 done, 1 failed of 200"
    assert page.locator("#run-progress .p-done").evaluate("e => e.style.width") == "75%"
    assert "does not exist" in page.locator("#failure-table").inner_text()
    page.screenshot(path=str(shots / "run-progress.png"), full_page=True)

    page.get_by_role("button", name="Cancel").click()
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
    assert page.get_by_test_id("run-status").inner_text() == "cancelled"
    assert page.get_by_role("button", name="Resume").is_visible()
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert page.locator("#run-progress").get_attribute("hx-trigger") is None
    page.screenshot(path=str(shots / "run-cancelled.png"), full_page=True)
