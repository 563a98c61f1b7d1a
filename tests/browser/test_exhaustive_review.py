"""Marking an image exhaustively reviewed from the keyboard, and the dataset's vocabulary.

Uses the review test's drawn street scenes. Screenshots go to ``FGAM_SCREENSHOT_DIR`` when set
(``exhaustive_*.png``).
"""

from __future__ import annotations

import os

import pytest

from tests.browser.test_pages import PASSWORD, chromium, shots  # noqa: F401 - fixtures
from tests.browser.test_review import log_in, new_page, street  # noqa: F401 - fixtures
from tests.catalog.factories import UserFactory
from webapp.catalog.models import Image
from webapp.regions.models import UndoStep

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_m_marks_the_image_and_moves_on_and_ctrl_z_clears_it(
    chromium,  # noqa: F811
    live_server,
    street,  # noqa: F811
    shots,  # noqa: F811
):
    dataset, images = street
    first, second = images
    context, page, errors = new_page(chromium)
    log_in(page, live_server, "ann")
    page.goto(f"{live_server.url}/review/datasets/{dataset.name}/")
    page.click("[data-testid=start-reviewing]")
    page.wait_for_url(f"**/review/images/{first.pk}/")
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    state = page.locator("[data-testid=review-state]")
    assert "Not marked exhaustively reviewed." in state.inner_text()

    # With regions pending, M is refused with a notice and the page stays.
    page.keyboard.press("m")
    page.wait_for_selector("[data-testid=notice]")
    assert "3 regions are still pending" in page.inner_text("[data-testid=notice]")
    assert page.url.endswith(f"/review/images/{first.pk}/")

    page.keyboard.press("Shift+A")
    page.wait_for_selector("[data-testid=progress] >> text=3 accepted")
    page.screenshot(path=str(shots / "exhaustive_review_page.png"), full_page=True)
    page.keyboard.press("m")
    page.wait_for_url(f"**/review/images/{second.pk}/?marked={first.pk}")
    first.refresh_from_db()
    assert first.exhaustively_reviewed_by.username == "ann"
    assert "Marked image #" in page.inner_text("[data-testid=marked-notice]")
    page.screenshot(path=str(shots / "exhaustive_next_image.png"), full_page=True)

    # Back on the marked image: its state says who, and Ctrl+Z clears it.
    page.click(f"[data-testid=marked-notice] a[href='/review/images/{first.pk}/']")
    page.wait_for_url(f"**/review/images/{first.pk}/")
    assert "by ann" in page.inner_text("[data-testid=review-state]")
    page.screenshot(path=str(shots / "exhaustive_marked_state.png"), full_page=True)
    page.keyboard.press("Control+z")
    page.wait_for_selector("[data-testid=review-state] >> text=Not marked exhaustively reviewed.")
    assert Image.objects.get(pk=first.pk).exhaustively_reviewed_at is None
    assert UndoStep.objects.filter(review_mark__isnull=False, closed_at__isnull=False).count() == 1
    # The next Ctrl+Z undoes the step before the mark: the accept-all.
    page.keyboard.press("Control+z")
    page.wait_for_selector("[data-testid=progress] >> text=3 pending")
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def test_the_dataset_page_shows_the_vocabulary_and_a_curator_adds_an_alias(
    chromium,  # noqa: F811
    live_server,
    street,  # noqa: F811
    shots,  # noqa: F811
):
    dataset, images = street
    for image in images:
        image.regions.update(status="accepted")
    images[1].regions.filter(phrase="bus").update(phrase="buses")
    context, page, errors = new_page(chromium)
    UserFactory(username="cur", roles=["curator"])
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "cur")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/datasets/{dataset.name}/")
    page.click("#dataset-vocabulary summary")
    bus = page.locator("#dataset-vocabulary tr[data-name=bus]")
    bus.wait_for()
    assert bus.locator("[data-count=regions]").inner_text() == "2"
    assert bus.locator("[data-count=images]").inner_text() == "2"
    page.screenshot(path=str(shots / "exhaustive_dataset_page.png"), full_page=True)

    page.goto(f"{live_server.url}/datasets/{dataset.name}/vocabulary")
    page.fill("#alias-form input[name=phrase]", "Buses")
    page.fill("#alias-form input[name=name]", "vehicle")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Alias saved: bus → vehicle.")
    assert page.locator("tr[data-name=vehicle] [data-count=regions]").inner_text() == "2"
    assert page.locator("tr[data-name=bus]").count() == 0
    page.screenshot(path=str(shots / "exhaustive_vocabulary_page.png"), full_page=True)
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"
