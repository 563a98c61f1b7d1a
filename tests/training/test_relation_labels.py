import itertools
import random

import pytest
import torch

from training.geometry import INVERSE, RELATIONS, relation_labels, spatial_relation


def labels(pairs):
    i = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    j = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    return [RELATIONS[k] for k in relation_labels(i, j).tolist()]


def random_boxes(rng, n, integer):
    boxes = []
    for _ in range(n):
        if integer:  # small integer grid: many exact ties (|dx| == |dy|, equal areas, IoU = 0.1)
            x0, y0 = rng.randint(0, 12), rng.randint(0, 12)
            boxes.append((x0, y0, x0 + rng.randint(1, 10), y0 + rng.randint(1, 10)))
        else:
            x0, y0 = rng.uniform(0, 90), rng.uniform(0, 90)
            boxes.append((x0, y0, x0 + rng.uniform(0.01, 60), y0 + rng.uniform(0.01, 60)))
    return boxes


@pytest.mark.parametrize("integer", [True, False])
def test_the_vectorised_labels_agree_exactly_with_spatial_relation(integer):
    rng = random.Random(1)
    pairs = list(itertools.permutations(random_boxes(rng, 120, integer), 2))
    assert labels(pairs) == [spatial_relation(i, j) for i, j in pairs]


def test_every_class_occurs_among_the_checked_pairs():
    rng = random.Random(1)
    pairs = list(itertools.permutations(random_boxes(rng, 120, True), 2))
    assert set(labels(pairs)) == set(RELATIONS)


@pytest.mark.parametrize(
    ("i", "j", "expected"),
    [
        ((0, 0, 10, 10), (20, 0, 30, 10), "left of"),
        ((20, 0, 30, 10), (0, 0, 10, 10), "right of"),
        ((0, 0, 10, 10), (0, 20, 10, 30), "above"),
        ((0, 20, 10, 30), (0, 0, 10, 10), "below"),
        ((0, 0, 10, 10), (5, 0, 15, 10), "overlaps"),
        ((0, 0, 100, 100), (10, 10, 20, 20), "contains"),
        ((10, 10, 20, 20), (0, 0, 100, 100), "inside"),
        # ties
        ((0, 0, 10, 10), (0, 0, 10, 10), "overlaps"),  # equal areas tie rules 1-2
        ((0, 0, 10, 10), (20, 20, 30, 30), "left of"),  # |dx| == |dy|: horizontal wins
        ((20, 20, 30, 30), (0, 0, 10, 10), "right of"),
        ((0, 0, 10, 10), (0, 0, 10, 10.0 * 9 / 10), "contains"),  # n/a_j == 1, a_i > a_j
        ((0, 0, 10, 10), (0, 0, 1, 10), "contains"),  # IoU exactly 0.1 but contained first
        ((0, 0, 10, 10), (9, 0, 19, 10), "left of"),  # IoU 10/190 < 0.1: centres decide
        ((0, 0, 1e-3, 1e-3), (5e-4, 0, 1.5e-3, 1e-3), "overlaps"),  # tiny boxes
    ],
)
def test_hand_made_pairs(i, j, expected):
    assert spatial_relation(i, j) == expected
    assert labels([(i, j)]) == [expected]
    assert labels([(j, i)]) == [INVERSE[expected]]


def test_the_vectorised_labels_are_antisymmetric():
    rng = random.Random(2)
    pairs = list(itertools.permutations(random_boxes(rng, 60, True), 2))
    forward = labels(pairs)
    backward = labels([(j, i) for i, j in pairs])
    assert backward == [INVERSE[r] for r in forward]


def test_no_pairs_give_no_labels():
    empty = torch.zeros((0, 4))
    assert relation_labels(empty, empty).shape == (0,)


def test_coinciding_centres_give_overlaps_in_the_vectorised_labels_too():
    plus = [((45, 0, 55, 100), (0, 45, 100, 55)), ((0, 45, 100, 55), (45, 0, 55, 100))]
    assert labels(plus) == ["overlaps", "overlaps"] == [spatial_relation(i, j) for i, j in plus]
