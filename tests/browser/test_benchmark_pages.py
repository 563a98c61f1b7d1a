"""The benchmark pages in headless Chromium: a job scored by the real scorer against the
scripted loopback endpoint, its metrics table, and the wrong-answers list with each probe's
image and box, filtered by split and object."""

from __future__ import annotations

import pytest

from tests.benchmarks.fixtures import WRONG, probe_set, scripted_server  # noqa: F401 (fixtures)
from tests.browser.test_pages import PASSWORD, chromium, page, shots  # noqa: F401 (fixtures)
from tests.catalog.factories import UserFactory
from webapp.benchmarks.services import start_benchmark

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_wrong_answers_page_shows_images_boxes_and_filters(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    probe_set,  # noqa: F811
    scripted_server,  # noqa: F811
    tmp_path,
    settings,
):
    settings.FGAM_BENCHMARK_DIR = str(tmp_path / "benchmarks")
    UserFactory(username="annie", roles=["annotator"])
    # No transaction is open here (transaction=True), so the job is enqueued and run at once.
    job = start_benchmark(probe_set=probe_set, model_spec=f"{scripted_server.url}#scripted")
    job.refresh_from_db()
    assert job.status == "done", job.error

    page.goto(f"{live_server.url}/login/?next=/benchmarks/{job.pk}/")
    page.fill("input[name=username]", "annie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/benchmarks/{job.pk}/")
    assert page.get_by_test_id("bench-status").inner_text() == "done"
    pope_all = page.locator('#metrics-table tr[data-split="all"][data-parser="pope"]')
    assert pope_all.locator('[data-metric="accuracy"]').inner_text() == "0.625"
    assert pope_all.locator('[data-metric="wrong"]').inner_text() == "3"
    page.screenshot(path=str(shots / "benchmark-metrics.png"), full_page=True)

    page.get_by_role("link", name="Browse the wrong answers").click()
    page.wait_for_url(f"{live_server.url}/benchmarks/{job.pk}/answers/")
    cards = page.locator(".answer-card")
    assert cards.count() == len(WRONG["strict"])
    assert page.get_by_test_id("answer-total").inner_text() == str(len(WRONG["strict"]))
    # Every image is loaded from the probe-set folder; the yes-probes have their box drawn.
    page.wait_for_function(
        "[...document.querySelectorAll('.answer-card img')]"
        ".every(i => i.complete && i.naturalWidth)"
    )
    apple = page.locator('.answer-card[data-object="apple"]')
    assert apple.get_by_test_id("model-answer").inner_text() == "“There is not an apple.”"
    assert apple.get_by_test_id("expected").inner_text() == "yes"
    assert apple.get_by_test_id("reading").inner_text() == "unparsed"
    box = apple.locator("svg.overlay rect").bounding_box()
    figure = apple.locator("figure").bounding_box()
    assert box is not None and figure is not None
    # The 40 x 30 px box of a 64 x 48 px image covers the same share of the shown figure.
    assert box["width"] / figure["width"] == pytest.approx(40 / 64, abs=0.02)
    assert page.locator('.answer-card[data-object="car"] svg.overlay').count() == 0
    page.screenshot(path=str(shots / "benchmark-wrong-answers.png"), full_page=True)

    page.select_option("select[name=split]", "popular")
    page.select_option("select[name=parser]", "pope")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/answers/?parser=pope*")
    objects = {c.get_attribute("data-object") for c in page.locator(".answer-card").all()}
    assert objects == {"apple", "car", "umbrella"}
    page.select_option("select[name=object]", "car")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**object=car*")
    assert page.locator(".answer-card").count() == 1
    assert page.locator(".answer-card").get_attribute("data-split") == "popular"
    page.screenshot(path=str(shots / "benchmark-filtered.png"), full_page=True)

    page.get_by_role("link", name="Benchmarks").first.click()
    page.wait_for_url(f"{live_server.url}/benchmarks/")
    row = page.locator(f'#benchmark-table tr[data-benchmark="{job.pk}"]')
    assert "done" in row.inner_text() and "0.667" in row.inner_text()
    page.screenshot(path=str(shots / "benchmark-list.png"), full_page=True)
