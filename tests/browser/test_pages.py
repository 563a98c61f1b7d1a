"""The catalog pages in headless Chromium: log in, browse, and check the boxes on an image.

Chromium comes from the Debian package (``/usr/bin/chromium``); no browser is downloaded. Where
it is missing the tests skip, unless ``FGAM_REQUIRE_BROWSER=1`` (CI), where they fail.
Screenshots go to ``FGAM_SCREENSHOT_DIR`` when set, else to the test's temporary folder.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.catalog.demo import write_demo
from webapp.catalog.thumbnails import ensure_thumbnail
from webapp.regions.models import Region
from workers.imaging import inspect_image

# Playwright's sync API runs an event loop in this thread; Django's ORM calls made by the test
# itself (fixtures, factories) are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("FGAM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FGAM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("FGAM_SCREENSHOT_DIR") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def scenes(tmp_path, media_root):
    """Six drawn demo scenes with their known boxes, stored like an import leaves them."""
    instances_path, captions_path, images_dir = write_demo(tmp_path / "demo", count=6)
    instances = json.loads(instances_path.read_text())
    captions = {
        c["image_id"]: c["caption"] for c in json.loads(captions_path.read_text())["annotations"]
    }
    names = {c["id"]: c["name"] for c in instances["categories"]}
    dataset = DatasetFactory(name="scenes", description="Drawn scenes with known objects.")
    images = {}
    for entry in instances["images"]:
        data = (images_dir / entry["file_name"]).read_bytes()
        info = inspect_image(data)
        default_storage.save(info.storage_path, ContentFile(data))
        images[entry["id"]] = ImageFactory(
            dataset=dataset,
            sha256=info.sha256,
            width=info.width,
            height=info.height,
            format=info.format,
            storage_path=info.storage_path,
            file_name=entry["file_name"],
            captions=[captions[entry["id"]]],
            split="train",
        )
    statuses = [Region.Status.PENDING, Region.Status.ACCEPTED, Region.Status.REJECTED]
    for n, ann in enumerate(instances["annotations"]):
        x, y, w, h = ann["bbox"]
        RegionFactory(
            image=images[ann["image_id"]],
            x0=x,
            y0=y,
            x1=x + w,
            y1=y + h,
            phrase=names[ann["category_id"]],
            caption=f"a {names[ann['category_id']]} in the scene",
            status=statuses[n % 3],
            origin=Region.Origin.GT if n % 2 else Region.Origin.DETECTOR,
            score=None if n % 2 else 0.5 + (n % 5) / 10,
            flagged=n % 4 == 0,
        )
    if connection.vendor == "sqlite":
        # The live server's threads share one in-memory SQLite connection; six thumbnail
        # requests writing at once can trip over each other there (not on PostgreSQL).
        # Making the thumbnails first leaves the browser with reads only.
        for image in images.values():
            ensure_thumbnail(image)
    DatasetFactory(name="empty-set")
    return dataset, list(images.values())


def log_in(page, live_server) -> None:
    UserFactory(username="curie", roles=["curator", "annotator"])
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    page.fill("input[name=username]", "curie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_a_curator_logs_in_browses_and_sees_boxes_over_the_image(page, live_server, scenes, shots):
    dataset, images = scenes
    log_in(page, live_server)
    assert page.inner_text("[data-testid=current-user]") == "curie"
    assert "curator" in page.inner_text(".roles")
    row = page.locator("tr[data-dataset=scenes]")
    assert row.locator("[data-count=images]").inner_text() == "6"
    page.screenshot(path=str(shots / "dataset_list.png"), full_page=True)

    row.locator("a", has_text="scenes").click()
    page.wait_for_url(f"**/datasets/{dataset.name}/")
    thumbs = page.locator("li.tile img")
    assert thumbs.count() == 6
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.tile img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(shots / "image_grid.png"), full_page=True)

    image = images[1]
    expected = image.regions.count()
    page.locator(f"li.tile[data-image='{image.pk}'] a").click()
    page.wait_for_url(f"**/images/{image.pk}/")
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    rects = page.locator("svg.overlay rect")
    assert rects.count() == expected >= 2

    # The overlay covers the picture exactly, and a box sits where its pixels say.
    img_box = page.locator(".figure img").bounding_box()
    svg_box = page.locator("svg.overlay").bounding_box()
    for key in ("x", "y", "width", "height"):
        assert abs(img_box[key] - svg_box[key]) < 1, key
    region = image.regions.order_by("pk").first()
    scale = img_box["width"] / image.width
    rect_box = page.locator(f"rect[data-region='{region.pk}']").bounding_box()
    assert abs(rect_box["x"] - (img_box["x"] + region.x0 * scale)) < 2
    assert abs(rect_box["width"] - (region.x1 - region.x0) * scale) < 3

    page.screenshot(path=str(shots / "image_page.png"), full_page=True)

    row = page.locator(f"#region-table tr[data-region='{region.pk}']")
    row.hover()
    rect = page.locator(f"rect[data-region='{region.pk}']")
    assert "is-highlighted" in (rect.get_attribute("class") or "")
    assert page.locator("svg.overlay.has-highlight").count() == 1
    page.screenshot(path=str(shots / "image_page_hover.png"), full_page=True)

    row.click()
    assert "is-selected" in (rect.get_attribute("class") or "")


def test_boxes_line_up_on_a_tall_image_whatever_its_exif_orientation(
    page, live_server, scenes, shots
):
    """Boxes are in stored pixels, so the picture is shown unrotated even with EXIF tag 6."""
    dataset, _ = scenes
    canvas = PILImage.new("RGB", (300, 600), (235, 235, 235))
    ImageDraw.Draw(canvas).rectangle((50, 400, 250, 550), fill=(30, 90, 200))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = io.BytesIO()
    canvas.save(out, "JPEG", exif=exif.tobytes())
    data = out.getvalue()
    info = inspect_image(data)
    default_storage.save(info.storage_path, ContentFile(data))
    image = ImageFactory(
        dataset=dataset,
        sha256=info.sha256,
        width=300,
        height=600,
        format="JPEG",
        storage_path=info.storage_path,
        file_name="portrait.jpg",
    )
    region = RegionFactory(image=image, x0=50, y0=400, x1=250, y1=550, phrase="blue block")
    log_in(page, live_server)
    page.goto(f"{live_server.url}/images/{image.pk}/")
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    img = page.locator(".figure img")
    assert img.evaluate("i => getComputedStyle(i).imageOrientation") == "none"
    img_box = img.bounding_box()
    assert img_box["height"] <= 0.8 * 900 + 1  # fits the viewport
    scale = img_box["height"] / 600
    rect_box = page.locator(f"rect[data-region='{region.pk}']").bounding_box()
    assert abs(rect_box["y"] - (img_box["y"] + 400 * scale)) < 2
    assert abs(rect_box["height"] - 150 * scale) < 3
    # The drawn block's pixels are under the box: sample the middle of the box on screen.
    page.screenshot(path=str(shots / "image_page_portrait.png"))
    centre = {
        "x": rect_box["x"] + rect_box["width"] / 2 - 2,
        "y": rect_box["y"] + rect_box["height"] / 2 - 2,
        "width": 4,
        "height": 4,
    }
    with PILImage.open(io.BytesIO(page.screenshot(clip=centre))) as sample:
        r, g, b = sample.convert("RGB").getpixel((2, 2))
    assert b > 150 and r < 80, (r, g, b)


def test_filters_and_load_more_swap_fragments_without_a_page_load(
    page, live_server, scenes, shots, monkeypatch
):
    from webapp.catalog import views

    dataset, images = scenes
    monkeypatch.setattr(views, "GRID_PAGE_SIZE", 4)
    log_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.name}/")
    page.evaluate("window.__same_page = true")
    assert page.locator("li.tile").count() == 4
    page.click("#load-more a")
    page.wait_for_function("() => document.querySelectorAll('li.tile').length === 6")
    assert page.evaluate("window.__same_page") is True
    assert page.locator("#load-more").count() == 0

    image = images[0]
    accepted = image.regions.filter(status=Region.Status.ACCEPTED).count()
    assert 1 <= accepted < image.regions.count()
    page.goto(f"{live_server.url}/images/{image.pk}/")
    page.evaluate("window.__same_page = true")
    page.locator(".chips[aria-label=Status] a", has_text="accepted").click()
    page.wait_for_url(f"**/images/{image.pk}/?status=accepted")
    page.wait_for_function(
        f"() => document.querySelectorAll('svg.overlay rect').length === {accepted}"
    )
    assert page.evaluate("window.__same_page") is True
    assert page.locator("#region-table tbody tr[data-region]").count() == accepted
    # Hover still works on the swapped-in fragment.
    first = page.locator("#region-table tbody tr[data-region]").first
    first.hover()
    rect = page.locator(f"rect[data-region='{first.get_attribute('data-region')}']")
    assert "is-highlighted" in (rect.get_attribute("class") or "")
    page.screenshot(path=str(shots / "image_page_filtered.png"), full_page=True)
