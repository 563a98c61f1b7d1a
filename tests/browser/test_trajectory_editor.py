"""The trajectory editor in headless Chromium, driven from the keyboard as an annotator would.

Same browser set-up as ``test_pages.py`` (Debian Chromium, no download). Screenshots go to
``FGAM_SCREENSHOT_DIR`` when set, named ``trajectory_*.png``.
"""

from __future__ import annotations

import os

import pytest

from tests.browser.test_pages import chromium, shots  # noqa: F401 - fixtures
from tests.browser.test_review import log_in, new_page, scene
from tests.catalog.factories import DatasetFactory, RegionFactory
from tests.trajectories.factories import make_trajectory
from webapp.trajectories.models import Trajectory, TrajectoryChange

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHAIN = [
    ("A red car is parked to the right of the tree.",
     "The car is left of the tree, not right. Please revise.", []),
    ("A red car is parked to the left of the tree.", "No further corrections needed.", []),
]  # fmt: skip


@pytest.fixture
def street(media_root):
    dataset = DatasetFactory(name="street")
    image = scene(dataset, 0)
    for box, name in (((40, 250, 200, 330), "car"), ((300, 60, 420, 200), "tree")):
        RegionFactory(
            image=image, x0=box[0], y0=box[1], x1=box[2], y1=box[3], phrase=name,
            status="accepted",
        )  # fmt: skip
    trajectory = make_trajectory(
        image, question="Where is the car?", chain=CHAIN, model="llava-1.5-7b", rm="fgam-rm"
    )
    return dataset, trajectory


def wait_version(page, version: int) -> None:
    page.wait_for_selector(f"#doc-state[data-version='{version}']")


def test_an_annotator_fixes_tags_and_approves_a_trajectory_from_the_keyboard(
    chromium,  # noqa: F811
    live_server,
    street,
    shots,  # noqa: F811
):
    dataset, trajectory = street
    context, page, errors = new_page(chromium)
    log_in(page, live_server, "ann")
    page.goto(f"{live_server.url}/trajectories/datasets/{dataset.name}/")
    page.screenshot(path=str(shots / "trajectory_queue.png"), full_page=True)
    page.click("[data-testid=start-editing]")
    page.wait_for_url(f"**/trajectories/{trajectory.pk}/")
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    assert page.locator(".overlay .box").count() == 2
    # The diff between A_0 and A_1 shows the one word that changed.
    assert page.inner_text("[data-testid=diff-1] del") == "right"
    assert page.inner_text("[data-testid=diff-1] ins") == "left"
    page.screenshot(path=str(shots / "trajectory_editor.png"), full_page=True)

    # A_0 is current; J J moves past F_0 to A_1; E edits it, Enter saves.
    assert "is-current" in page.get_attribute("[data-block=response-0]", "class")
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert "is-current" in page.get_attribute("[data-block=response-1]", "class")
    page.keyboard.press("e")
    field = page.locator("[data-block=response-1] textarea")
    assert field.is_visible()
    field.fill("A red car is parked to the left of the green tree.")
    page.screenshot(path=str(shots / "trajectory_edit_answer.png"), full_page=True)
    page.keyboard.press("Enter")
    wait_version(page, 2)
    assert (
        page.inner_text("[data-testid=response-1]")
        == "A red car is parked to the left of the green tree."
    )
    assert page.inner_text("[data-testid=response-by-1]") == "user:ann"
    assert page.inner_text("[data-testid=status]") == "In Review"

    # K K back to A_0, which had the spatial error: 3 tags it.
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.keyboard.press("3")
    wait_version(page, 3)
    assert page.is_checked("#step-0 input[value=spatial]")
    # U: the last answer becomes the final answer; A approves.
    page.keyboard.press("u")
    wait_version(page, 4)
    assert (
        page.inner_text("[data-testid=final]")
        == "A red car is parked to the left of the green tree."
    )
    page.keyboard.press("a")
    wait_version(page, 5)
    assert page.inner_text("[data-testid=status]") == "Approved"

    # Reload: everything was saved.
    page.reload()
    assert page.inner_text("[data-testid=status]") == "Approved"
    assert page.is_checked("#step-0 input[value=spatial]")
    assert not page.is_checked("#step-1 input[value=spatial]")
    assert (
        page.inner_text("[data-testid=response-1]")
        == "A red car is parked to the left of the green tree."
    )
    page.screenshot(path=str(shots / "trajectory_approved.png"), full_page=True)
    fresh = Trajectory.objects.get(pk=trajectory.pk)
    assert fresh.status == "approved" and fresh.version == 5
    assert fresh.final_answer == "A red car is parked to the left of the green tree."
    assert fresh.steps.get(k=0).error_types == ["spatial"]

    # N adds a step after the current one (a copy of A_0) and opens it for editing.
    page.keyboard.press("n")
    page.wait_for_selector("[data-block=response-1].editing")
    wait_version(page, 6)
    assert page.locator(".step").count() == 3
    page.keyboard.press("Control+a")
    page.keyboard.type("A car is parked left of the tree.")
    page.keyboard.press("Enter")
    wait_version(page, 7)
    assert page.inner_text("[data-testid=response-1]") == "A car is parked left of the tree."
    assert page.inner_text("[data-testid=diff-2] ins").startswith("red")
    # Del removes it again.
    page.keyboard.press("Delete")
    wait_version(page, 8)
    assert page.locator(".step").count() == 2

    # H opens the history; the shortcut sheet opens with ?.
    page.keyboard.press("h")
    page.locator("#history-dialog[open] [data-testid=history]").wait_for()
    assert page.locator("#history-dialog tr[data-change]").count() == 8
    page.screenshot(path=str(shots / "trajectory_history.png"), full_page=True)
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    assert page.locator("#shortcuts[open]").count() == 1
    page.keyboard.press("Escape")
    context.close()
    assert errors == [], errors


def test_two_annotators_edit_the_same_trajectory_and_nothing_is_lost(
    chromium,  # noqa: F811
    live_server,
    street,
    shots,  # noqa: F811
):
    _, trajectory = street
    url = f"{live_server.url}/trajectories/{trajectory.pk}/"
    ann_context, ann, ann_errors = new_page(chromium)
    bob_context, bob, bob_errors = new_page(chromium)
    log_in(ann, live_server, "ann")
    log_in(bob, live_server, "bob")
    ann.goto(url)
    bob.goto(url)

    # Bob rewrites F_0 first (J moves from A_0 to F_0).
    bob.keyboard.press("j")
    bob.keyboard.press("e")
    bob.locator("[data-block=feedback-0] textarea").fill("bob: the car is on the left.")
    bob.keyboard.press("Control+Enter")
    wait_version(bob, 2)

    # Ann, still on version 1, rewrites it too: 409 and the conflict panel.
    ann.keyboard.press("j")
    ann.keyboard.press("e")
    ann.locator("[data-block=feedback-0] textarea").fill("ann: left of the tree, not right.")
    ann.keyboard.press("Enter")
    panel = ann.locator("[data-testid=conflict]")
    panel.wait_for()
    assert panel.locator("[data-testid=theirs]").inner_text() == "bob: the car is on the left."
    assert panel.locator("[data-testid=yours]").inner_text() == "ann: left of the tree, not right."
    ann.screenshot(path=str(shots / "trajectory_conflict.png"), full_page=True)
    assert trajectory.steps.get(k=0).feedback == "bob: the car is on the left."

    # Ann keeps hers, saved on top of Bob's version, which stays in the history.
    panel.locator("[data-testid=keep-mine]").click()
    wait_version(ann, 3)
    assert ann.locator("[data-testid=conflict]").count() == 0
    assert ann.inner_text("[data-testid=feedback-0]") == "ann: left of the tree, not right."

    # Bob, now stale, tags an error; he takes Ann's version instead of overwriting it.
    bob.keyboard.press("k")
    bob.keyboard.press("3")
    bob.locator("[data-testid=conflict]").wait_for()
    bob.locator("[data-testid=take-theirs]").click()
    wait_version(bob, 3)
    assert bob.inner_text("[data-testid=feedback-0]") == "ann: left of the tree, not right."
    assert bob.locator("[data-testid=conflict]").count() == 0
    # And his next action goes through on the version he now sees.
    bob.keyboard.press("3")
    wait_version(bob, 4)
    assert trajectory.steps.get(k=0).error_types == ["spatial"]
    assert TrajectoryChange.objects.filter(trajectory=trajectory).count() == 4
    ann_context.close()
    bob_context.close()
    assert ann_errors == [] and bob_errors == []
