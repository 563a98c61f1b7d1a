"""Tests of significance between the systems of a round: paired Wilcoxon signed-rank tests
of per-item means, their effect size, and Holm's correction across the pairs of a criterion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

# scipy is imported where it is used: the web app imports this module with its URLs, and scipy
# alone costs every web process about half a second at start.


@dataclass(frozen=True)
class Comparison:
    """A Wilcoxon signed-rank test of two systems on one criterion (per-item means, paired)."""

    criterion: str
    system_a: str
    system_b: str
    n: int  # items rated for both systems on this criterion
    mean_difference: float | None  # mean over those items of (a - b)
    statistic: float | None  # scipy's W: the smaller of the signed-rank sums (two-sided)
    p_value: float | None
    p_holm: float | None  # Holm-adjusted across all comparisons of this criterion
    reason: str | None = None
    # Matched-pairs rank-biserial correlation (R+ - R-) / (R+ + R-) over the non-zero
    # differences, -1..1; positive when system a scores higher (Kerby 2014).
    effect_size: float | None = None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as the input).

    Sorted ascending, p_(i) is multiplied by (m - i + 1); the running maximum keeps the
    adjusted values monotone, and they are capped at 1 (Holm 1979).

    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist()


def wilcoxon_comparison(criterion: str, a: str, b: str, x: np.ndarray, y: np.ndarray) -> Comparison:
    """Wilcoxon signed-rank test of per-item means x (system a) vs y (b) on items with both."""
    from scipy import stats as scipy_stats

    both = ~np.isnan(x) & ~np.isnan(y)
    n = int(both.sum())
    if n == 0:
        return Comparison(
            criterion, a, b, n, None, None, None, None, reason="no item was rated for both systems"
        )
    diff = x[both] - y[both]
    mean_difference = float(diff.mean())
    if not np.any(diff != 0):
        # scipy would divide by a zero variance; with no non-zero difference the signed ranks
        # carry no evidence either way, so the test cannot reject: W = 0, p = 1.
        return Comparison(
            criterion,
            a,
            b,
            n,
            mean_difference,
            0.0,
            1.0,
            None,
            reason="every per-item difference is zero",
        )
    result = scipy_stats.wilcoxon(x[both], y[both])
    return Comparison(
        criterion,
        a,
        b,
        n,
        mean_difference,
        float(result.statistic),
        float(result.pvalue),
        None,
        effect_size=rank_biserial(diff),
    )


def rank_biserial(differences: np.ndarray) -> float | None:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped).

    Ranks of |d| (ties averaged) summed separately for positive and negative d:
    (R+ - R-) / (R+ + R-).

    >>> rank_biserial(np.array([1.0, 2.0, 3.0])), rank_biserial(np.array([1.0, 2.0, -3.0]))
    (1.0, 0.0)
    """
    from scipy import stats as scipy_stats

    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return None
    ranks = scipy_stats.rankdata(np.abs(d))
    positive, negative = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((positive - negative) / (positive + negative))


def pairwise_comparisons(
    item_means: np.ndarray, systems: Sequence[str], criteria: Sequence[str]
) -> dict[str, tuple[Comparison, ...]]:
    """Every pair of systems on every criterion, Holm-corrected across the pairs of a
    criterion (pairs that could not be tested keep ``p_holm`` None)."""
    out: dict[str, tuple[Comparison, ...]] = {}
    for c, criterion in enumerate(criteria):
        raw: list[Comparison] = []
        for a, b in combinations(range(len(systems)), 2):
            raw.append(
                wilcoxon_comparison(
                    criterion, systems[a], systems[b], item_means[:, a, c], item_means[:, b, c]
                )
            )
        tested = [i for i, comp in enumerate(raw) if comp.p_value is not None]
        adjusted = holm([float(raw[i].p_value or 0.0) for i in tested])
        final = list(raw)
        for i, p_holm in zip(tested, adjusted, strict=True):
            final[i] = replace(raw[i], p_holm=p_holm)
        out[criterion] = tuple(final)
    return out
