import doctest
import itertools
import math
import random

import pytest

import training.geometry as geometry
from training.geometry import INVERSE, BoxError, fit_box, spatial_relation


def test_the_docstring_examples_hold():
    failures, _ = doctest.testmod(geometry)
    assert failures == 0


def test_relation_of_j_to_i_is_always_the_inverse_of_i_to_j():
    rng = random.Random(0)
    boxes = []
    for _ in range(60):
        x0, y0 = rng.uniform(0, 90), rng.uniform(0, 90)
        boxes.append((x0, y0, x0 + rng.uniform(1, 60), y0 + rng.uniform(1, 60)))
    for i, j in itertools.permutations(boxes, 2):
        assert spatial_relation(j, i) == INVERSE[spatial_relation(i, j)]


@pytest.mark.parametrize(
    ("i", "j", "expected"),
    [
        ((0, 0, 10, 10), (5, 0, 15, 10), "overlaps"),  # IoU 1/3
        ((0, 0, 10, 10), (0, 0, 10, 10), "overlaps"),  # equal areas tie rules 1-2
        ((0, 0, 10, 10), (0, 20, 10, 30), "above"),
        ((0, 20, 10, 30), (0, 0, 10, 10), "below"),
        ((30, 0, 40, 10), (0, 0, 10, 10), "right of"),
    ],
)
def test_the_formats_rules(i, j, expected):
    assert spatial_relation(i, j) == expected


def test_a_box_within_tolerance_is_clipped_and_one_beyond_is_refused():
    assert fit_box((0, 0, 103, 50), 100, 100, tolerance=4).box == (0, 0, 100, 50)
    with pytest.raises(BoxError, match="outside the 100x100 image"):
        fit_box((0, 0, 120, 50), 100, 100, tolerance=4)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_coordinate_is_refused(bad):
    with pytest.raises(BoxError, match="non-finite"):
        fit_box((0, 0, bad, 10), 100, 100, tolerance=4)


def test_a_box_entirely_outside_within_tolerance_is_still_refused():
    with pytest.raises(BoxError, match="no area inside"):
        fit_box((100, 0, 103, 10), 100, 100, tolerance=4)
