"""Per-rater bias: how far each rater's scores lie from the other raters of the same responses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from webapp.evaluation.stats.ratings import EncodedRatings, unit_sums


@dataclass(frozen=True)
class RaterBias:
    """A rater's mean offset from the mean of the other raters of the same responses."""

    rater: str
    criterion: str
    offset: float | None
    n: int  # responses this rater shares with at least one other rater
    reason: str | None = None


def measure_rater_bias(
    enc: EncodedRatings, n_units: int, criteria: Sequence[str]
) -> tuple[RaterBias, ...]:
    """Each rater's mean offset per criterion, raters in name order: on every response the
    rater shares with another, the rater's score minus the mean of the others' scores."""
    sums, counts = unit_sums(enc, enc.scores, n_units)
    n_raters = len(enc.raters)
    out: list[RaterBias] = []
    offsets = np.zeros((n_raters, len(criteria)))
    shared = np.zeros((n_raters, len(criteria)), dtype=np.int64)
    for c in range(len(criteria)):
        x = enc.scores[:, c]
        unit_n = counts[enc.row_unit, c]
        usable = ~np.isnan(x) & (unit_n >= 2)
        others = (sums[enc.row_unit[usable], c] - x[usable]) / (unit_n[usable] - 1)
        diff = x[usable] - others
        offsets[:, c] = np.bincount(enc.row_rater[usable], weights=diff, minlength=n_raters)
        shared[:, c] = np.bincount(enc.row_rater[usable], minlength=n_raters)
    for r in sorted(range(n_raters), key=lambda i: enc.raters[i]):
        for c, criterion in enumerate(criteria):
            n = int(shared[r, c])
            if n == 0:
                out.append(
                    RaterBias(
                        enc.raters[r],
                        criterion,
                        None,
                        0,
                        "shares no rated response with another rater",
                    )
                )
            else:
                out.append(RaterBias(enc.raters[r], criterion, float(offsets[r, c] / n), n))
    return tuple(out)
