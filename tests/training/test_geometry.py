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


def test_the_inverse_holds_also_when_centres_coincide():
    # Integer boxes around a few shared centres, so many pairs have the same centre exactly.
    rng = random.Random(1)
    boxes = []
    for _ in range(80):
        cx, cy = rng.choice([(50, 50), (20, 70)])
        w, h = rng.randint(1, 20), rng.randint(1, 20)
        boxes.append((cx - w, cy - h, cx + w, cy + h))
    same_centre = 0
    for i, j in itertools.permutations(boxes, 2):
        assert spatial_relation(j, i) == INVERSE[spatial_relation(i, j)], (i, j)
        same_centre += (i[0] + i[2], i[1] + i[3]) == (j[0] + j[2], j[1] + j[3])
    assert same_centre > 1000


def test_two_thin_boxes_crossing_in_a_plus_sign_overlap_both_ways():
    vertical, horizontal = (45, 0, 55, 100), (0, 45, 100, 55)
    assert spatial_relation(vertical, horizontal) == "overlaps"
    assert spatial_relation(horizontal, vertical) == "overlaps"


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
