"""A seeded, optionally stratified sample of evaluation items (pure Python).

>>> rows = [{"id": str(i), "stratum": "a" if i < 6 else "b"} for i in range(10)]
>>> picked = sample_items(rows, n=5, seed=1, stratify=True)
>>> sorted(r["stratum"] for r in picked)
['a', 'a', 'a', 'b', 'b']
>>> picked == sample_items(list(reversed(rows)), n=5, seed=1, stratify=True)
True
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Proportional allocation by largest remainder; ties go to the larger, then named first."""
    total = sum(sizes.values())
    exact = {s: n * size / total for s, size in sizes.items()}
    counts = {s: min(math.floor(v), sizes[s]) for s, v in exact.items()}
    left = n - sum(counts.values())
    order = sorted(sizes, key=lambda s: (-(exact[s] - counts[s]), -sizes[s], s))
    while left > 0:
        moved = False
        for stratum in order:
            if left and counts[stratum] < sizes[stratum]:
                counts[stratum] += 1
                left -= 1
                moved = True
        if not moved:
            break
    return counts


def sample_items(
    rows: Sequence[dict[str, Any]], *, n: int, seed: int, stratify: bool = False
) -> list[dict[str, Any]]:
    """``n`` rows (all of them if fewer), the same for the same seed whatever the input order.

    Rows need an ``"id"``; with ``stratify`` each ``"stratum"`` keeps its share of the sample.
    The result is in a seeded random order, which becomes the items' positions.
    """
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    rng = random.Random(seed)
    if n >= len(ordered):
        picked = list(ordered)
    elif not stratify:
        picked = rng.sample(ordered, n)
    else:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in ordered:
            groups[str(row.get("stratum") or "")].append(row)
        counts = _allocate({s: len(g) for s, g in groups.items()}, n)
        picked = []
        for stratum in sorted(groups):
            picked.extend(rng.sample(groups[stratum], counts[stratum]))
    rng.shuffle(picked)
    return picked
