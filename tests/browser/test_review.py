"""The review screen in headless Chromium, driven from the keyboard as an annotator would.

Same browser set-up as ``test_pages.py`` (Debian Chromium, no download). Screenshots go to
``FGAM_SCREENSHOT_DIR`` when set, named ``review_*.png``.
"""

from __future__ import annotations

import io
import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.browser.test_pages import PASSWORD, chromium, shots  # noqa: F401 - fixtures
from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.jobs.models import Run
from webapp.regions.models import Region, RegionChange
from workers.imaging import inspect_image

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def scene(dataset, n: int):
    """A 640x400 PNG with a car, a tree and a bus drawn where their boxes are."""
    canvas = PILImage.new("RGB", (640, 400), (206, 222, 235))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 300, 640, 400), fill=(120, 120, 120))
    draw.rectangle((40, 250, 200, 330), fill=(200, 40, 40))  # car
    draw.ellipse((300, 60, 420, 200), fill=(40, 150, 60))  # tree
    draw.rectangle((350, 220, 470, 320 + n), fill=(40, 80, 200))  # bus
    draw.ellipse((520, 40, 600, 110), fill=(250, 210, 60))  # a sun no detector found
    out = io.BytesIO()
    canvas.save(out, "PNG")
    info = inspect_image(out.getvalue())
    default_storage.save(info.storage_path, ContentFile(out.getvalue()))
    return ImageFactory(
        dataset=dataset, sha256=info.sha256, width=info.width, height=info.height,
        format=info.format, storage_path=info.storage_path,
    )  # fmt: skip


@pytest.fixture
def street(media_root):
    dataset = DatasetFactory(name="street")
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, model_id="grounding-dino-tiny",
        parameters={"box_threshold": 0.35},
    )  # fmt: skip
    images = []
    for n, scores in enumerate(([0.41, 0.37, 0.52], [0.9, 0.8, 0.95])):
        image = scene(dataset, n)
        boxes = [(40, 250, 200, 330), (300, 60, 420, 200), (350, 220, 470, 320)]
        names = ["car", "tree", "bus"]
        for box, name, score in zip(boxes, names, scores, strict=True):
            RegionFactory(
                image=image, run=run, origin=Region.Origin.DETECTOR, score=score,
                x0=box[0], y0=box[1], x1=box[2], y1=box[3], phrase=name,
                caption=f"a {name} in the street",
            )  # fmt: skip
        images.append(image)
    return dataset, images


def new_page(chromium):  # noqa: F811
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "409" not in msg.text and "422" not in msg.text
            else None
        ),
    )
    return context, page, errors


def log_in(page, live_server, username: str) -> None:
    UserFactory(username=username, roles=["annotator"])
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def row(page, region):
    return page.locator(f"#row-{region.pk}")


def wait_version(page, region, version: int):
    page.wait_for_selector(f"#row-{region.pk}[data-version='{version}']")


def test_an_annotator_reviews_an_image_with_the_keyboard_only(
    chromium,  # noqa: F811
    live_server,
    street,
    shots,  # noqa: F811
):
    dataset, images = street
    context, page, errors = new_page(chromium)
    log_in(page, live_server, "ann")
    page.goto(f"{live_server.url}/review/datasets/{dataset.name}/")
    page.click("[data-testid=start-reviewing]")
    # The image whose region scores lie nearest the run's threshold comes first.
    page.wait_for_url(f"**/review/images/{images[0].pk}/")
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    car, tree, bus = images[0].regions.order_by("pk")
    assert "is-selected" in row(page, car).get_attribute("class")
    page.screenshot(path=str(shots / "review_page.png"), full_page=True)

    page.keyboard.press("a")  # accept the car; the selection moves to the tree
    wait_version(page, car, 2)
    assert row(page, car).get_attribute("data-status") == "accepted"
    assert "is-selected" in row(page, tree).get_attribute("class")
    page.keyboard.press("r")  # reject the tree
    wait_version(page, tree, 2)
    assert row(page, tree).get_attribute("data-status") == "rejected"
    assert page.inner_text("[data-testid=progress]").startswith("1 pending")

    # E edits the bus's caption; Enter saves.
    page.keyboard.press("e")
    caption = row(page, bus).locator("textarea[name=caption]")
    assert caption.is_visible()
    caption.fill("")
    page.keyboard.type("a blue bus on the right")
    page.screenshot(path=str(shots / "review_edit_caption.png"), full_page=True)
    page.keyboard.press("Enter")
    wait_version(page, bus, 2)
    assert row(page, bus).locator("[data-testid=caption]").inner_text() == "a blue bus on the right"

    # Drag the bus box's right edge 60 screen pixels to the right.
    svg = page.locator("#overlay").bounding_box()
    scale = svg["width"] / images[0].width  # screen pixels per image pixel
    rect = page.locator(f"#box-{bus.pk} rect").bounding_box()
    page.mouse.move(rect["x"] + rect["width"] - 1, rect["y"] + rect["height"] / 2)
    page.mouse.down()
    page.mouse.move(rect["x"] + rect["width"] + 30, rect["y"] + rect["height"] / 2, steps=5)
    page.mouse.move(rect["x"] + rect["width"] + 60, rect["y"] + rect["height"] / 2, steps=5)
    page.mouse.up()
    wait_version(page, bus, 3)
    bus.refresh_from_db()
    assert bus.x0 == 350 and bus.y0 == 220 and bus.y1 == 320
    assert abs(bus.x1 - (470 + 60 / scale)) < 3

    # N draws a new box around the sun; its phrase and caption editor opens at once.
    page.keyboard.press("n")
    page.mouse.move(svg["x"] + 515 * scale, svg["y"] + 35 * scale)
    page.mouse.down()
    page.mouse.move(svg["x"] + 560 * scale, svg["y"] + 80 * scale, steps=4)
    page.mouse.move(svg["x"] + 605 * scale, svg["y"] + 115 * scale, steps=4)
    page.mouse.up()
    page.wait_for_selector("tr[data-origin=human] .caption-form:not([hidden])")
    sun = Region.objects.get(image=images[0], origin="human")
    assert abs(sun.x0 - 515) < 3 and abs(sun.y1 - 115) < 3
    row(page, sun).locator("input[name=phrase]").fill("sun")
    row(page, sun).locator("textarea[name=caption]").fill("a yellow sun in the upper right")
    row(page, sun).locator("textarea[name=caption]").press("Enter")
    wait_version(page, sun, 2)
    page.screenshot(path=str(shots / "review_after_edits.png"), full_page=True)

    # K back to the tree, accept it by mistake, and Ctrl+Z undoes that as a new version.
    for _ in range(2):
        page.keyboard.press("k")
    assert "is-selected" in row(page, tree).get_attribute("class")
    page.keyboard.press("a")
    wait_version(page, tree, 3)
    page.keyboard.press("Control+z")
    wait_version(page, tree, 4)
    assert row(page, tree).get_attribute("data-status") == "rejected"

    # ? shows the shortcut sheet.
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.screenshot(path=str(shots / "review_shortcuts.png"))
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()

    # After a reload everything is as the annotator left it.
    page.reload()
    assert row(page, car).get_attribute("data-status") == "accepted"
    assert row(page, tree).get_attribute("data-status") == "rejected"
    assert "a blue bus on the right" in row(page, bus).inner_text()
    assert row(page, sun).locator(".phrase-text").inner_text() == "sun"
    changes = RegionChange.objects.filter(region_id=tree.pk).order_by("pk")
    assert [c.after["status"] for c in changes] == ["rejected", "accepted", "rejected"]

    # The undo stack survived the reload: Ctrl+Z undoes the last action still on it, the sun's
    # phrase and caption written before the reload, and a second one the drawing of the sun.
    page.keyboard.press("Control+z")
    wait_version(page, sun, 3)
    assert row(page, sun).locator(".phrase-text").inner_text() == "—"
    sun.refresh_from_db()
    assert (sun.phrase, sun.caption, sun.version) == ("", "", 3)
    page.keyboard.press("Control+z")
    page.wait_for_selector(f"#row-{sun.pk}", state="detached")
    assert not Region.objects.filter(pk=sun.pk).exists()
    assert page.locator(f"#box-{sun.pk}").count() == 0
    assert page.inner_text("[data-testid=mode]") == "Undone"
    page.screenshot(path=str(shots / "review_undo_after_reload.png"), full_page=True)

    # The history is one key away (the first pending region, the bus, is selected; K: tree).
    assert "is-selected" in row(page, bus).get_attribute("class")
    page.keyboard.press("k")
    page.keyboard.press("h")
    page.wait_for_selector("#history-dialog[open] [data-testid=history]")
    assert page.locator("#history-dialog tr[data-change]").count() == 3
    page.screenshot(path=str(shots / "review_history.png"))
    page.keyboard.press("Escape")

    # Space: the next image.
    page.keyboard.press(" ")
    page.wait_for_url(f"**/review/images/{images[1].pk}/")

    # The dataset's progress page counts what was done.
    page.goto(f"{live_server.url}/review/datasets/{dataset.name}/progress")
    assert page.inner_text("[data-testid=count-accepted]") == "1"
    assert page.inner_text("[data-testid=count-rejected]") == "1"
    page.screenshot(path=str(shots / "review_progress.png"), full_page=True)
    context.close()
    assert errors == [], errors


def test_two_annotators_edit_the_same_region_and_nothing_is_lost(
    chromium,  # noqa: F811
    live_server,
    street,
    shots,  # noqa: F811
):
    _, images = street
    image = images[0]
    car = image.regions.order_by("pk").first()
    url = f"{live_server.url}/review/images/{image.pk}/"
    ann_context, ann, ann_errors = new_page(chromium)
    bob_context, bob, bob_errors = new_page(chromium)
    log_in(ann, live_server, "ann")
    log_in(bob, live_server, "bob")
    ann.goto(url)
    bob.goto(url)

    # Bob rewrites the car's caption first.
    bob.keyboard.press("e")
    bob.locator(f"#row-{car.pk} textarea[name=caption]").fill("bob: a red car parked")
    bob.keyboard.press("Enter")
    wait_version(bob, car, 2)

    # Ann, still looking at version 1, rewrites it too: 409 and the conflict panel.
    ann.keyboard.press("e")
    ann.locator(f"#row-{car.pk} textarea[name=caption]").fill("ann: a red car on the left")
    ann.keyboard.press("Enter")
    panel = ann.locator("[data-testid=conflict]")
    panel.wait_for()
    assert "bob: a red car parked" in panel.locator("[data-testid=theirs]").inner_text()
    assert "ann: a red car on the left" in panel.locator("[data-testid=yours]").inner_text()
    ann.screenshot(path=str(shots / "review_conflict.png"), full_page=True)
    car.refresh_from_db()
    assert car.caption == "bob: a red car parked"

    # Ann keeps hers: saved on top of Bob's version, which stays in the history.
    panel.locator("[data-testid=keep-mine]").click()
    wait_version(ann, car, 3)
    assert ann.locator("[data-testid=conflict]").count() == 0
    car.refresh_from_db()
    assert car.caption == "ann: a red car on the left"

    # Bob (now stale) rejects it; he takes Ann's version instead of overwriting it.
    bob.keyboard.press("r")
    bob.locator("[data-testid=conflict]").wait_for()
    bob.locator("[data-testid=take-theirs]").click()
    wait_version(bob, car, 3)
    assert "ann: a red car on the left" in bob.locator(f"#row-{car.pk}").inner_text()
    car.refresh_from_db()
    assert (car.status, car.version) == ("pending", 3)
    captions = [c.after["caption"] for c in RegionChange.objects.filter(region=car)]
    assert captions == ["bob: a red car parked", "ann: a red car on the left"]

    ann_context.close()
    bob_context.close()
    assert ann_errors == [] and bob_errors == []
