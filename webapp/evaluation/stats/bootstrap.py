"""Estimates with percentile bootstrap intervals over items.

The bootstrap resamples items (one (image, question) pair each), the same draws for every
column rated on the same items, so figures of two systems stay paired and a figure derived from
both (the relative reduction of an error rate against the baseline, Table 3) gets an interval
too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Bootstrap replicates are gathered in chunks so that 10,000 items x 2,000 replicates never
# holds more than about this many draws at once (a few arrays of ~32 MB each).
_BOOTSTRAP_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile bootstrap interval over items.

    Rates (hallucination, error types) are percentages 0..100; Likert means are on 1..5.
    ``value`` is None when nothing was rated, and ``reason`` says why.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int  # items that entered the estimate
    reason: str | None = None


def relative_reduction(baseline_rate: float | None, rate: float | None) -> float | None:
    """(baseline - rate) / baseline * 100, or None when the baseline rate is 0 or unknown.

    >>> relative_reduction(12.5, 4.0)
    68.0
    """
    if baseline_rate is None or rate is None or baseline_rate == 0:
        return None
    return (baseline_rate - rate) / baseline_rate * 100.0


def bootstrap_replicates(
    values: np.ndarray, *, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """n_boot x k bootstrap replicate means of the columns of ``values`` (items x k).

    Each replicate draws n items with replacement, the same draw for every column, so columns
    (e.g. two systems rated on the same items) stay paired. A replicate mean is
    (how often each item was drawn) @ values / n: counting the draws with one flat bincount and
    multiplying in BLAS is much faster than gathering n_boot x n x k values, and chunking keeps
    10,000 items x 2,000 replicates within a few tens of MB.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n, k = values.shape
    replicates = np.empty((max(n_boot, 0), k))
    if n == 0:
        replicates.fill(np.nan)
        return replicates
    chunk = max(1, _BOOTSTRAP_CHUNK_VALUES // n)
    for start in range(0, n_boot, chunk):
        size = min(n_boot, start + chunk) - start
        draws = rng.integers(0, n, size=(size, n))
        draws += np.arange(size)[:, None] * n
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        del draws
        replicates[start : start + size] = counts.astype(float) @ values / n
    return replicates


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """The (1-confidence)/2 and (1+confidence)/2 percentiles of each column: shape 2 x k.

    >>> percentile_interval(np.arange(101.0)[:, None], 0.5).ravel().tolist()
    [25.0, 75.0]
    """
    tail = (1.0 - confidence) / 2.0 * 100.0
    return np.percentile(replicates, [tail, 100.0 - tail], axis=0)


def bootstrap_means(
    values: np.ndarray, *, n_boot: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means of the columns of ``values`` (items x k) and their percentile bootstrap bounds."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n, k = values.shape
    means = values.mean(axis=0) if n else np.full(k, np.nan)
    if n_boot <= 0 or n == 0:
        return means, np.full(k, np.nan), np.full(k, np.nan)
    low, high = percentile_interval(
        bootstrap_replicates(values, n_boot=n_boot, rng=rng), confidence
    )
    return means, low, high


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of one sample with a seeded percentile bootstrap.

    >>> bootstrap_ci([2.0, 2.0, 2.0], n_boot=50)
    (2.0, 2.0, 2.0)
    """
    rng = np.random.default_rng(seed)
    means, low, high = bootstrap_means(
        np.asarray(values, dtype=float), n_boot=n_boot, rng=rng, confidence=confidence
    )
    return float(means[0]), float(low[0]), float(high[0])


@dataclass
class BootstrapEstimates:
    """Estimates of many columns, with the replicates kept for derived figures (reductions)."""

    estimates: list[Estimate]
    replicates: np.ndarray  # n_boot x k replicate means (unscaled)
    group: list[int]  # columns with the same group were resampled with the same draws


def paired_estimates(
    values: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    confidence: float,
    scales: Sequence[float],
) -> BootstrapEstimates:
    """Estimates of the columns of an items x variables matrix; NaN marks an unrated cell.

    ``scales`` multiplies each column's figures (100 turns a proportion into a percentage).
    Columns rated on the same items share one set of draws: a paired bootstrap over items, so
    figures derived from two columns (a reduction against the baseline) get an interval too.
    """
    k = values.shape[1]
    out: list[Estimate | None] = [None] * k
    replicates = np.full((max(n_boot, 0), k), np.nan)
    group_of = [-1] * k
    rated = ~np.isnan(values)
    groups: dict[bytes, list[int]] = {}
    for j in range(k):
        groups.setdefault(np.packbits(rated[:, j]).tobytes(), []).append(j)
    has_ci = n_boot > 0
    for group, columns in enumerate(groups.values()):
        mask = rated[:, columns[0]]
        n = int(mask.sum())
        for j in columns:
            group_of[j] = group
        if n == 0:
            for j in columns:
                out[j] = Estimate(None, None, None, 0, "no ratings")
            continue
        sample = values[mask][:, columns]
        means = sample.mean(axis=0)
        if has_ci:
            replicates[:, columns] = bootstrap_replicates(sample, n_boot=n_boot, rng=rng)
            low, high = percentile_interval(replicates[:, columns], confidence)
        for position, j in enumerate(columns):
            scale = scales[j]
            out[j] = Estimate(
                float(means[position]) * scale,
                float(low[position]) * scale if has_ci else None,
                float(high[position]) * scale if has_ci else None,
                n,
                None if has_ci else "no bootstrap replicates (n_boot = 0)",
            )
    return BootstrapEstimates([e for e in out if e is not None], replicates, group_of)


def reduction_estimate(
    boot: BootstrapEstimates, base_column: int, column: int, confidence: float
) -> Estimate:
    """Relative reduction of a rate against the baseline's, with a paired bootstrap interval."""
    base, other = boot.estimates[base_column], boot.estimates[column]
    n = min(base.n, other.n)
    if base.value is None or other.value is None:
        return Estimate(None, None, None, n, "a rate is missing (no ratings)")
    if base.value == 0:
        return Estimate(
            None, None, None, n, "the baseline rate is 0, so a relative reduction is undefined"
        )
    value = relative_reduction(base.value, other.value)
    if boot.replicates.shape[0] == 0:
        return Estimate(value, None, None, n, "no bootstrap replicates (n_boot = 0)")
    if boot.group[base_column] != boot.group[column]:
        return Estimate(
            value, None, None, n, "the systems were rated on different items, so no paired interval"
        )
    b, o = boot.replicates[:, base_column], boot.replicates[:, column]
    if np.any(b == 0):
        return Estimate(
            value,
            None,
            None,
            n,
            "the baseline rate is 0 in some bootstrap replicates, so no interval",
        )
    low, high = percentile_interval((b - o) / b * 100.0, confidence)
    return Estimate(value, float(low), float(high), n)
