"""The consistency checks: each rule flags what it should and leaves clean regions alone."""

from __future__ import annotations

import io

import pytest

from tests.catalog.factories import ImageFactory, RegionFactory
from webapp.regions.lint import (
    LintRegion,
    degenerate_problems,
    duplicate_problems,
    lint_regions,
    phrase_problems,
    relation_problems,
    spatial_position_problems,
)
from webapp.regions.services import apply_lint

W, H = 300, 300


@pytest.mark.parametrize(
    ("caption", "box", "flagged"),
    [
        ("a dog on the left", (220, 120, 280, 180), True),  # right third
        ("a dog on the left", (10, 120, 60, 180), False),
        ("a dog on the left", (120, 120, 180, 180), False),  # centre: not a contradiction
        ("a lamp at the top", (120, 230, 180, 290), True),
        ("a lamp in the upper right", (230, 10, 290, 60), False),
        ("a cat in the lower left corner", (10, 10, 60, 60), True),
        ("a big red sofa", (220, 120, 280, 180), False),  # no spatial words at all
    ],
)
def test_spatial_words_that_contradict_the_box(caption, box, flagged):
    assert bool(spatial_position_problems(caption, box, W, H)) is flagged


def regions(*specs):
    return [LintRegion(n, box, phrase, caption) for n, (box, phrase, caption) in enumerate(specs)]


@pytest.mark.parametrize(
    ("caption", "flagged"),
    [
        ("a dog to the left of the car", True),  # the dog is right of the car
        ("a dog to the right of the car", False),
        ("a dog next to the car", False),  # nearness: nothing to contradict
        ("a dog above the car", False),  # left/right pair: above is not its inverse
    ],
)
def test_a_stated_relation_to_a_named_region_is_checked_against_formats_md(caption, flagged):
    dog, car = regions(((200, 100, 260, 160), "dog", caption), ((20, 100, 80, 160), "car", "a car"))
    assert bool(relation_problems(dog, [dog, car])) is flagged


def test_above_and_below_are_checked_too():
    lamp, table = regions(
        ((100, 200, 140, 240), "lamp", "a lamp above the table"),
        ((90, 20, 150, 60), "table", "a table"),
    )
    assert relation_problems(lamp, [lamp, table]) == ['says "above table" but it is below it']


def test_duplicates_need_the_same_phrase_and_iou_above_0_9():
    a, b, c, d = regions(
        ((10, 10, 110, 110), "car", ""),
        ((11, 11, 110, 110), "Car", ""),
        ((11, 11, 110, 110), "truck", ""),
        ((40, 40, 140, 140), "car", ""),
    )
    everyone = [a, b, c, d]
    assert duplicate_problems(a, everyone) == ["duplicate of #1"]
    assert duplicate_problems(c, everyone) == []
    assert duplicate_problems(d, everyone) == []


def test_degenerate_boxes_are_tiny_or_extremely_thin():
    assert degenerate_problems((10, 10, 12, 12), W, H)  # 4 px² of 90,000
    assert degenerate_problems((10, 10, 290, 20), W, H)  # 28:1
    assert degenerate_problems((10, 10, 11.5, 100), W, H)  # under 2 px wide
    assert not degenerate_problems((10, 10, 60, 40), W, H)


@pytest.mark.parametrize(
    ("phrase", "caption", "flagged"),
    [
        ("red car", "a red car on the road", False),
        ("car", "two cars parked", False),  # plural
        ("car", "a vehicle parked outside", False),  # synonym
        ("man", "a person walking", False),
        ("dog", "a cat asleep on a sofa", True),
        ("dog", "", False),  # no caption yet: nothing to compare
    ],
)
def test_caption_phrase_mismatch(phrase, caption, flagged):
    assert bool(phrase_problems(phrase, caption)) is flagged


def test_a_clean_image_has_no_flags():
    found = lint_regions(
        regions(
            ((10, 100, 80, 160), "dog", "a dog on the left, left of the car"),
            ((200, 100, 280, 160), "car", "a red car on the right"),
        ),
        W,
        H,
    )
    assert found == {0: [], 1: []}


@pytest.mark.django_db
def test_apply_lint_stores_flags_without_bumping_versions():
    image = ImageFactory(width=W, height=H)
    bad = RegionFactory(
        image=image, x0=220, y0=120, x1=280, y1=180, phrase="dog", caption="a dog on the left"
    )
    good = RegionFactory(
        image=image, x0=10, y0=120, x1=60, y1=180, phrase="cat", caption="a cat on the left"
    )
    apply_lint(image_id=image.pk)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.flagged and "left" in bad.flag_reason and bad.version == 1
    assert not good.flagged and good.flag_reason == ""


@pytest.mark.django_db
def test_the_lint_command_flags_a_whole_dataset():
    from django.core.management import call_command

    image = ImageFactory(width=W, height=H)
    bad = RegionFactory(image=image, x0=220, y0=120, x1=280, y1=180, phrase="dog", caption="a cat")
    call_command("lint_regions", image.dataset.name, stdout=io.StringIO())
    bad.refresh_from_db()
    assert bad.flagged and bad.flag_reason == 'caption does not mention "dog"'
