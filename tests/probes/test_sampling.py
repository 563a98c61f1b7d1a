"""The pure sampling rules (no database): articles, POPE orders, spatial pairs."""

from __future__ import annotations

import doctest

import pytest

from training.geometry import spatial_relation
from webapp.probes import sampling
from webapp.probes.sampling import (
    ImageObjects,
    SamplingError,
    article,
    co_occurrence_orders,
    frequency_order,
    plan_pope,
    plan_spatial,
    spatial_pairs,
)


def test_doctests():
    assert doctest.testmod(sampling).failed == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("apple", "an"), ("dog", "a"), ("unicorn", "a"), ("umbrella", "an"), ("hour", "an"),
     ("honest man", "an"), ("uniform", "a"), ("one-way sign", "a"), ("european car", "a"),
     ("elephant", "an"), ("horse", "a"), ("user", "a"), ("orange", "an")],
)  # fmt: skip
def test_article(name, expected):
    assert article(name) == expected


def im(sha: str, *names: str, reviewed: bool = True) -> ImageObjects:
    return ImageObjects(sha.ljust(64, "0"), frozenset(names), reviewed=reviewed)


IMAGES = [
    im("1", "dog", "cat", "sofa"),
    im("2", "dog", "cat", "tv"),
    im("3", "dog", "ball", "grass"),
    im("4", "car", "road", "tree"),
    im("5", "car", "road", "person"),
]


def test_frequency_and_co_occurrence_orders():
    assert frequency_order(IMAGES)[:4] == ["dog", "car", "cat", "road"]
    orders = co_occurrence_orders(IMAGES)
    assert orders["dog"] == ["cat", "ball", "grass", "sofa", "tv"]
    assert orders["car"] == ["road", "person", "tree"]


def test_unreviewed_and_small_images_are_never_candidates():
    images = [*IMAGES, im("6", "dog", "cat"), im("7", "a", "b", "c", "d", reviewed=False)]
    vocabulary = ["a", "b", "c", "d", "x", "y", "z", "dog"]
    plan = plan_pope(images, vocabulary=vocabulary, split="random", count=5, per_image=3, seed=1)
    assert plan.candidates == 5
    assert {p.image[0] for p in plan.probes} == {"1", "2", "3", "4", "5"}
    with pytest.raises(SamplingError, match="only 5 exhaustively reviewed"):
        plan_pope(images, vocabulary=["x"], split="random", count=6, per_image=3, seed=1)


def test_random_negatives_need_enough_vocabulary():
    with pytest.raises(SamplingError, match="vocabulary has"):
        plan_pope(IMAGES, vocabulary=["dog", "cat", "sofa", "tv"], split="random", count=5,
                  per_image=3, seed=0)  # fmt: skip


def test_spatial_pairs_skip_overlaps_and_repeated_names():
    image = ImageObjects.of_regions(
        "a" * 64,
        [("dog", (0, 0, 40, 40)), ("cat", (200, 0, 240, 40)), ("rug", (2, 2, 42, 42)),
         ("car", (300, 150, 340, 190)), ("car", (350, 0, 390, 40))],
    )  # fmt: skip
    pairs = spatial_pairs(image)
    named = {(image.regions[i][0], image.regions[j][0], rel) for i, j, rel in pairs}
    assert named == {("dog", "cat", "left of"), ("cat", "rug", "right of")}


def test_spatial_plan_is_balanced_and_true():
    images = [
        ImageObjects.of_regions(
            f"{n:064x}",
            [("dog", (0, 0, 10, 10)), ("cat", (50 + n, 0, 60 + n, 10)), ("cup", (0, 50, 10, 60))],
        )
        for n in range(20)
    ]
    plan = plan_spatial(images, count=20, per_image=3, seed=3)
    answers = [p.answer for p in plan.probes]
    assert answers.count("yes") == answers.count("no") == 30
    for p in plan.probes:
        holds = spatial_relation(*p.boxes)
        assert (holds == p.relation) == (p.answer == "yes")
    assert plan_spatial(images, count=20, per_image=3, seed=3).probes == plan.probes
    assert plan_spatial(images, count=20, per_image=3, seed=4).probes != plan.probes
