"""Inter-rater agreement of a round: Krippendorff's alpha and pooled exact agreement of rater
pairs, per Likert criterion (ordinal) and per yes/no mark (nominal), over responses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from webapp.evaluation.stats.ratings import (
    HALLUCINATION,
    LIKERT_MIN,
    LIKERT_VALUES,
    EncodedRatings,
)

# krippendorff is imported where it is used, as scipy elsewhere: web processes import this
# module with the app's URLs and need neither at start.


@dataclass(frozen=True)
class Agreement:
    """Inter-rater agreement on one measure over responses rated by at least two raters."""

    measure: str  # Likert criterion key, "hallucination" or "error:<type>"
    level: str  # "ordinal" or "nominal" (Krippendorff's level of measurement)
    alpha: float | None
    percent_agreement: float | None  # % of rater pairs on the same response that agree exactly
    n_units: int  # responses with at least two ratings of this measure
    n_pairs: int
    reason: str | None = None


def pairwise_agreement(value_counts: np.ndarray) -> tuple[float | None, int, int]:
    """Pooled exact agreement among rater pairs of the same unit: (% agreeing, units, pairs).

    ``value_counts`` is units x values (how many raters gave each value). A unit rated by m
    raters contributes m(m-1)/2 pairs; units with fewer than two ratings contribute none.
    """
    counts = np.asarray(value_counts, dtype=np.int64)
    per_unit = counts.sum(axis=1)
    pairs = int((per_unit * (per_unit - 1) // 2).sum())
    agreeing = int((counts * (counts - 1) // 2).sum())
    units = int((per_unit >= 2).sum())
    if pairs == 0:
        return None, units, 0
    return agreeing / pairs * 100.0, units, pairs


def krippendorff_alpha(
    value_counts: np.ndarray, *, values: Sequence[int], level: str
) -> tuple[float | None, str | None]:
    """Krippendorff's alpha from a units x values count matrix via the ``krippendorff`` package.

    Returns (alpha, None), or (None, reason) when alpha is undefined: no response has two
    ratings, or every rating has the same value (no expected disagreement to compare with).
    """
    counts = np.asarray(value_counts, dtype=float)
    pairable = counts[counts.sum(axis=1) >= 2]
    if pairable.shape[0] == 0:
        return None, (
            "undefined: no response was rated by two or more raters (alpha compares raters of "
            "the same response)"
        )
    if np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None, (
            "undefined: every rating has the same value, so there is no expected disagreement "
            "to compare with"
        )
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"unknown level of measurement {level!r}")
    import krippendorff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        alpha = float(
            krippendorff.alpha(
                value_counts=pairable,
                value_domain=list(values),
                level_of_measurement=level,  # type: ignore[arg-type]
            )
        )
    if not math.isfinite(alpha):
        return None, "undefined: the expected disagreement is zero"
    return alpha, None


def _value_counts(units: np.ndarray, codes: np.ndarray, n_units: int, n_values: int) -> np.ndarray:
    """units x values matrix: how many ratings of each unit have each value code."""
    flat = np.bincount(units * n_values + codes, minlength=n_units * n_values)
    return flat.reshape(n_units, n_values)


def measure_agreement(
    enc: EncodedRatings, n_units: int, criteria: Sequence[str], error_types: Sequence[str]
) -> tuple[Agreement, ...]:
    """Agreement on every measure of the round: each Likert criterion (ordinal), the
    hallucination mark and each error type (nominal), over responses as units."""
    measures: list[tuple[str, str, np.ndarray, np.ndarray, Sequence[int]]] = []
    for c, criterion in enumerate(criteria):
        present = ~np.isnan(enc.scores[:, c])
        codes = enc.scores[present, c].astype(np.int64) - LIKERT_MIN
        measures.append((criterion, "ordinal", enc.row_unit[present], codes, LIKERT_VALUES))
    measures.append(
        (HALLUCINATION, "nominal", enc.row_unit, enc.hallucination.astype(np.int64), (0, 1))
    )
    for e, error_type in enumerate(error_types):
        measures.append(
            (
                f"error:{error_type}",
                "nominal",
                enc.row_unit,
                enc.errors[:, e].astype(np.int64),
                (0, 1),
            )
        )
    out = []
    for measure, level, units, codes, values in measures:
        counts = _value_counts(units, codes, n_units, len(values))
        percent, pairable_units, pairs = pairwise_agreement(counts)
        alpha, reason = krippendorff_alpha(counts, values=values, level=level)
        out.append(Agreement(measure, level, alpha, percent, pairable_units, pairs, reason))
    return tuple(out)
