"""The blind rating page in headless Chromium, driven by the keyboard alone, and the
curator's results page. Screenshots go to ``FGAM_SCREENSHOT_DIR`` (``evaluation_*.png``)."""

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
from webapp.evaluation import services
from webapp.evaluation.models import Assignment, EvalItem, Rating, Response, System
from webapp.regions.models import Region
from workers.imaging import inspect_image

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWERS = [
    "The red car is on the left of the tree, parked on the grey road.",
    "A blue bus stands to the right of the tree; the car is on its left.",
    "There is a cat sitting on the bonnet of the car, to the left of the tree.",
]


def street_image(dataset, n: int):
    canvas = PILImage.new("RGB", (640, 400), (206, 222, 235))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 300, 640, 400), fill=(120, 120, 120))
    draw.rectangle((40, 250, 200, 330), fill=(200, 40, 40))
    draw.ellipse((300, 60, 420, 200), fill=(40, 150, 60))
    draw.rectangle((450, 220, 590, 320 + n), fill=(40, 80, 200))
    out = io.BytesIO()
    canvas.save(out, "PNG")
    info = inspect_image(out.getvalue())
    default_storage.save(info.storage_path, ContentFile(out.getvalue()))
    image = ImageFactory(
        dataset=dataset, sha256=info.sha256, width=info.width, height=info.height,
        format=info.format, storage_path=info.storage_path,
    )  # fmt: skip
    for box, phrase in (((40, 250, 200, 330), "red car"), ((300, 60, 420, 200), "tree")):
        RegionFactory(
            image=image, x0=box[0], y0=box[1], x1=box[2], y1=box[3], phrase=phrase,
            status=Region.Status.ACCEPTED,
        )  # fmt: skip
    return image


@pytest.fixture
def open_round(media_root):
    dataset = DatasetFactory(name="street")
    round_ = services.create_round(name="Street scenes", seed=11)
    systems = [
        System.objects.create(round=round_, name=n) for n in ("ZEBRA-A", "ZEBRA-B", "ZEBRA-C")
    ]
    for position in range(2):
        item = EvalItem.objects.create(
            round=round_, key=f"q{position}", image=street_image(dataset, position),
            position=position, question="Where is the red car, relative to the tree?",
            reference="On the left of the tree.",
        )  # fmt: skip
        for system, text in zip(systems, ANSWERS, strict=True):
            Response.objects.create(item=item, system=system, text=f"{text} (item {position + 1})")
    services.set_baseline(round_=round_, system=systems[0])
    services.open_round(round_=round_)
    return round_


def log_in(page, live_server, username: str, roles) -> None:
    UserFactory(username=username, roles=roles)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    # Curators land on the dataset list, raters on their evaluation page.
    landing = "/evaluation/" if roles == ["rater"] else "/"
    page.wait_for_url(f"{live_server.url}{landing}")


def new_page(chromium):  # noqa: F811
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return context, page, errors


def shown_texts(page) -> list[str]:
    return page.locator("[data-testid=response-text]").all_inner_texts()


def checked(page) -> list[str]:
    return page.eval_on_selector_all(
        "#rating-form input:checked", "els => els.map(e => e.name + '=' + e.value)"
    )


def rate_by_keyboard(page, scores, flags) -> None:
    """Per response: three scores, then its flag keys, then Tab to the next response."""
    for response_scores, response_flags in zip(scores, flags, strict=True):
        for value in response_scores:
            page.keyboard.press(str(value))
        for key in response_flags:
            page.keyboard.press(key)
        page.keyboard.press("Tab")


def test_a_rater_rates_by_keyboard_alone_and_sees_the_same_page_after_reload(
    chromium,  # noqa: F811
    live_server,
    open_round,
    shots,  # noqa: F811
):
    context, page, errors = new_page(chromium)
    log_in(page, live_server, "rita", ["rater"])
    page.goto(f"{live_server.url}/evaluation/rounds/{open_round.pk}/mine")
    # "Start rating" has the focus (autofocus); on a loaded machine it comes a moment after load.
    page.wait_for_function("() => document.activeElement?.textContent.includes('Start rating')")
    page.keyboard.press("Enter")
    page.wait_for_url("**/evaluation/assignments/*/")
    first_url = page.url
    page.wait_for_function("() => document.querySelector('.figure img').naturalWidth > 0")
    order = shown_texts(page)
    assert sorted(order) == sorted(f"{t} (item 1)" for t in ANSWERS) or sorted(order) == sorted(
        f"{t} (item 2)" for t in ANSWERS
    )
    assert page.locator("#regions").is_hidden()
    page.keyboard.press("g")
    assert page.locator("#regions").is_visible()
    assert page.locator("#regions rect").count() == 2

    # Enter with nothing rated does not post: it points at the first missing score.
    page.keyboard.press("Enter")
    assert "Response 1" in page.locator("[data-testid=hint]").inner_text()
    rate_by_keyboard(page, [(4, 3, 5), (2, 2, 1), (5, 4, 4)], [(), ("h", "o", "s"), ("a",)])
    expected_first = checked(page)
    assert len(expected_first) == 9 + 4
    page.screenshot(path=str(shots / "evaluation_rating_page.png"), full_page=True)

    # Reload before saving: same order (recorded on the seat).
    page.reload()
    assert shown_texts(page) == order
    rate_by_keyboard(page, [(4, 3, 5), (2, 2, 1), (5, 4, 4)], [(), ("h", "o", "s"), ("a",)])
    page.keyboard.press("Enter")  # save and go to the next item
    page.wait_for_url(lambda url: url != first_url and "/assignments/" in url)
    second_url = page.url
    second_order = shown_texts(page)
    rate_by_keyboard(page, [(3, 3, 3), (3, 3, 3), (3, 3, 3)], [(), (), ("r",)])
    page.keyboard.press("Enter")
    page.wait_for_url("**/mine?finished=1")
    assert page.locator("[data-testid=finished]").is_visible()

    # Reload the rated items: same order, same ratings.
    page.goto(first_url)
    assert shown_texts(page) == order
    assert checked(page) == expected_first
    assert page.locator("[data-testid=revising]").is_visible()
    page.goto(second_url)
    assert shown_texts(page) == second_order

    # The database has what the page showed, under the responses in the page's order.
    seat = Assignment.objects.get(pk=int(first_url.rstrip("/").rsplit("/", 1)[1]))
    by_response = {r.response_id: r for r in Rating.objects.filter(assignment=seat)}
    second = by_response[seat.order[1]]
    assert second.scores == {"localization": 2, "coherence": 2, "quality": 1}
    assert second.hallucination and sorted(second.error_types) == ["object", "spatial"]
    assert by_response[seat.order[2]].error_types == ["attribute"]

    # Revise one score by keyboard: response 1's quality 5 -> 2; history keeps both.
    page.goto(first_url)
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url("**?saved=1")
    first = Rating.objects.get(assignment=seat, response_id=seat.order[0])
    assert first.scores["quality"] == 2 and first.version == 2
    assert list(first.changes.values_list("version", flat=True)) == [1, 2]
    assert errors == []
    context.close()


def test_the_results_page_as_a_curator_sees_it(
    chromium,  # noqa: F811
    live_server,
    open_round,
    shots,  # noqa: F811
):
    from tests.evaluation.test_results import rate_everything

    rate_everything(open_round, hallucinating="ZEBRA-A")
    context, page, errors = new_page(chromium)
    log_in(page, live_server, "cura", ["curator"])
    page.goto(f"{live_server.url}/evaluation/rounds/{open_round.pk}/results")
    assert page.locator("#table-table5 table").count() == 1
    assert page.locator(".chart svg").count() == 1
    page.screenshot(path=str(shots / "evaluation_results_page.png"), full_page=True)
    page.goto(f"{live_server.url}/evaluation/rounds/{open_round.pk}/")
    page.screenshot(path=str(shots / "evaluation_round_page.png"), full_page=True)

    # A draft whose responses name a model: the curator is warned before opening.
    from tests.evaluation.conftest import make_round

    draft = make_round(items=3, name="Draft with a leak", open_it=False)
    leaking = Response.objects.filter(item__round=draft).order_by("pk").first()
    Response.objects.filter(pk=leaking.pk).update(text="As LLaVA-1.5 I see a red car on the left.")
    page.goto(f"{live_server.url}/evaluation/rounds/{draft.pk}/")
    assert "LLaVA-1.5 I see" in page.locator("[data-testid=leaks]").inner_text()
    page.screenshot(path=str(shots / "evaluation_round_draft.png"), full_page=True)
    assert errors == []
    context.close()
