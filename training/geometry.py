"""Box geometry shared by the importers, the review UI's caption lint and the Stage-1 loss.

Boxes are pixel ``[x0, y0, x1, y1]`` with the origin top-left and y growing downwards,
``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height`` (``docs/formats.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Box = tuple[float, float, float, float]

CONTAINS_FRACTION = 0.9
OVERLAP_IOU = 0.1

RELATIONS = ("left of", "right of", "above", "below", "overlaps", "contains", "inside")
INVERSE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "overlaps": "overlaps",
    "contains": "inside",
    "inside": "contains",
}


class BoxError(ValueError):
    """A box that cannot be stored: not finite, empty, inverted or outside its image."""


@dataclass(frozen=True)
class FittedBox:
    box: Box
    clipped: bool


def from_xywh(x: float, y: float, w: float, h: float) -> Box:
    """COCO / Visual Genome ``[x, y, w, h]`` to ``[x0, y0, x1, y1]``.

    >>> from_xywh(10, 20, 30, 40)
    (10.0, 20.0, 40.0, 60.0)
    """
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


def fit_box(box: Box, width: int, height: int, tolerance: float | None = None) -> FittedBox:
    """Validate ``box`` against its image and clip it to the image.

    Real annotation files hold boxes past the edge (Visual Genome's spill by tens or hundreds
    of pixels), so by default (``tolerance=None``) any box that overlaps the image is clipped to
    it and reported as clipped. A number makes it strict: a spill of more than ``tolerance``
    pixels is an error. A box with no area inside the image, empty or not finite is always an
    error.

    >>> fit_box((-2, 0, 50, 101), 100, 100)
    FittedBox(box=(0.0, 0.0, 50.0, 100.0), clipped=True)
    >>> fit_box((0, 0, 300, 50), 100, 100).box
    (0.0, 0.0, 100.0, 50.0)
    >>> fit_box((0, 0, 300, 50), 100, 100, tolerance=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    training.geometry.BoxError: box [0, 0, 300, 50] lies 200 px outside the 100x100 image ...
    >>> fit_box((0, 0, 0, 10), 100, 100)
    Traceback (most recent call last):
    ...
    training.geometry.BoxError: box has zero or negative size: [0, 0, 0, 10]
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = "[" + ", ".join(f"{v:g}" for v in (x0, y0, x1, y1)) + "]"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BoxError(f"box has a non-finite coordinate: {shown}")
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box has zero or negative size: {shown}")
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        raise BoxError(f"box {shown} lies outside the {width}x{height} image (no area inside it)")
    spill = max(-x0, -y0, x1 - width, y1 - height, 0.0)
    if tolerance is not None and spill > tolerance:
        raise BoxError(
            f"box {shown} lies {spill:g} px outside the {width}x{height} image "
            f"(at most {tolerance:g} px is clipped)"
        )
    return FittedBox((cx0, cy0, cx1, cy1), clipped=spill > 0)


def area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def intersection(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two pixel boxes.

    >>> iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    >>> iou((0, 0, 1, 1), (2, 2, 3, 3))
    0.0
    """
    n = intersection(a, b)
    union = area(a) + area(b) - n
    return n / union if union > 0 else 0.0


def spatial_relation(i: Box, j: Box) -> str:
    """GT_SpatialRel(i, j) from ``docs/formats.md``: how region i stands to region j.

    >>> spatial_relation((0, 0, 10, 10), (20, 0, 30, 10))
    'left of'
    >>> spatial_relation((0, 0, 100, 100), (10, 10, 20, 20))
    'contains'
    >>> spatial_relation((10, 10, 20, 20), (0, 0, 100, 100))
    'inside'
    >>> spatial_relation((0, 0, 10, 10), (0, 30, 10, 40))
    'above'
    >>> spatial_relation((45, 0, 55, 100), (0, 45, 100, 55))  # a plus sign: centres coincide
    'overlaps'
    """
    a_i, a_j = area(i), area(j)
    n = intersection(i, j)
    if a_j > 0 and n / a_j >= CONTAINS_FRACTION and a_i > a_j:
        return "contains"
    if a_i > 0 and n / a_i >= CONTAINS_FRACTION and a_j > a_i:
        return "inside"
    union = a_i + a_j - n
    # Equal areas that would tie rules 1-2 always have IoU >= 0.81, so land here too.
    if union > 0 and n / union >= OVERLAP_IOU:
        return "overlaps"
    dx = (j[0] + j[2]) / 2 - (i[0] + i[2]) / 2
    dy = (j[1] + j[3]) / 2 - (i[1] + i[3]) / 2
    # Rule 4: with coinciding centres no direction holds either way, and "right of" both ways
    # would break rel(j, i) == INVERSE[rel(i, j)].
    if dx == 0 and dy == 0:
        return "overlaps"
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def relation_labels(boxes_i: torch.Tensor, boxes_j: torch.Tensor) -> torch.Tensor:
    """``spatial_relation`` for many pairs at once, as indices into ``RELATIONS``.

    The same arithmetic in float64, in the same order, so every label agrees exactly with the
    scalar function (ties included); ``tests/training/test_relation_labels.py`` checks it.

    boxes_i, boxes_j: [P, 4] pixel ``[x0, y0, x1, y1]`` -> [P] int64.

    >>> import torch
    >>> b = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 100, 100]])
    >>> [RELATIONS[k] for k in relation_labels(b[[0, 1, 2]], b[[1, 0, 0]]).tolist()]
    ['left of', 'right of', 'contains']
    """
    import torch  # local: importing training.geometry stays free of torch

    i = boxes_i.to(torch.float64)
    j = boxes_j.to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    a_i = (i[:, 2] - i[:, 0]).clamp(min=0) * (i[:, 3] - i[:, 1]).clamp(min=0)
    a_j = (j[:, 2] - j[:, 0]).clamp(min=0) * (j[:, 3] - j[:, 1]).clamp(min=0)
    w = torch.minimum(i[:, 2], j[:, 2]) - torch.maximum(i[:, 0], j[:, 0])
    h = torch.minimum(i[:, 3], j[:, 3]) - torch.maximum(i[:, 1], j[:, 1])
    n = torch.where((w > 0) & (h > 0), w * h, zero)
    union = a_i + a_j - n

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return num / torch.where(den > 0, den, torch.ones_like(den))

    contains = (a_j > 0) & (ratio(n, a_j) >= CONTAINS_FRACTION) & (a_i > a_j)
    inside = (a_i > 0) & (ratio(n, a_i) >= CONTAINS_FRACTION) & (a_j > a_i)
    overlaps = (union > 0) & (ratio(n, union) >= OVERLAP_IOU)
    dx = (j[:, 0] + j[:, 2]) / 2 - (i[:, 0] + i[:, 2]) / 2
    dy = (j[:, 1] + j[:, 3]) / 2 - (i[:, 1] + i[:, 3]) / 2
    index = {name: k for k, name in enumerate(RELATIONS)}

    def const(name: str) -> torch.Tensor:
        return torch.full_like(dx, index[name], dtype=torch.int64)

    horizontal = torch.where(dx > 0, const("left of"), const("right of"))
    vertical = torch.where(dy > 0, const("above"), const("below"))
    label = torch.where(dx.abs() >= dy.abs(), horizontal, vertical)
    same_centre = (dx == 0) & (dy == 0)
    label = torch.where(overlaps | same_centre, const("overlaps"), label)
    label = torch.where(inside, const("inside"), label)
    return torch.where(contains, const("contains"), label)
