"""Statistics of a blind evaluation round (preprint §4.6 Table 3 and §4.8 Table 5).

Pure Python + numpy/scipy/krippendorff: no Django, so it can be tested and benchmarked alone and
called from a view, a task or a notebook. The web app turns its ``Rating`` rows into
:class:`RatingRow` values and calls :func:`compute_results`; :mod:`webapp.evaluation.tables` and
:mod:`webapp.evaluation.charts` render the :class:`Results`.

Units of analysis (the README's statistics section says the same in words):

* an **item** is one (image, question) pair; it is the unit the bootstrap resamples;
* a **response** is one (item, system) pair; it is the unit of inter-rater agreement and of the
  majority rule for hallucinations and error types;
* a **rating** is one rater's judgement of one response (one :class:`RatingRow`).

Every number that cannot be computed is ``None`` together with a reason, never NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from typing import Any

import numpy as np

from training.formats import ERROR_TYPES

# scipy and krippendorff are imported where they are used: this module is imported with the
# web app's URLs, and scipy alone costs every web process about half a second at start.

LIKERT_MIN = 1
LIKERT_MAX = 5
LIKERT_VALUES = tuple(range(LIKERT_MIN, LIKERT_MAX + 1))

HALLUCINATION = "hallucination"
TOTAL_ERROR = "total"

#: Default Likert criteria of the paper's Table 5, key -> column label.
DEFAULT_CRITERIA: Mapping[str, str] = {
    "localization": "F-G Localization Acc.",
    "coherence": "Reasoning Coherence",
    "quality": "Overall Quality",
}
ERROR_TYPE_LABELS: Mapping[str, str] = {
    "object": "Object Hallucination",
    "attribute": "Attribute Hallucination",
    "spatial": "Spatial Relation Hallucination",
    "reasoning": "Reasoning Inconsistency",
}

# Bootstrap replicates are gathered in chunks so that 10,000 items x 2,000 replicates never
# holds more than about this many draws at once (a few arrays of ~32 MB each).
_BOOTSTRAP_CHUNK_VALUES = 4_000_000


class RatingDataError(ValueError):
    """Bad input to :func:`compute_results`; the message names the row and field."""


@dataclass(frozen=True)
class RatingRow:
    """One rater's rating of one system's response to one item."""

    item: str
    system: str
    rater: str
    scores: Mapping[str, int]  # Likert criterion key -> 1..5; a missing key = not rated
    hallucination: bool
    error_types: frozenset[str]  # subset of the round's error types


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


@dataclass(frozen=True)
class RaterBias:
    """A rater's mean offset from the mean of the other raters of the same responses."""

    rater: str
    criterion: str
    offset: float | None
    n: int  # responses this rater shares with at least one other rater
    reason: str | None = None


@dataclass(frozen=True)
class Results:
    """Everything the results page and the exported tables show. ``as_dict()`` is JSON-able."""

    systems: tuple[str, ...]
    criteria: tuple[str, ...]
    labels: Mapping[str, str]  # Likert criterion key -> label
    error_types: tuple[str, ...]
    baseline: str | None
    n_boot: int
    seed: int
    confidence: float
    n_items: int
    n_responses: int
    n_ratings: int
    n_raters: int
    likert: Mapping[str, Mapping[str, Estimate]]  # system -> criterion -> mean on 1..5
    hallucination: Mapping[str, Estimate]  # system -> % of responses (majority rule)
    error_rates: Mapping[str, Mapping[str, Estimate]]  # system -> type -> % (majority rule)
    total_error_rate: Mapping[str, Estimate]  # system -> mean of the type percentages
    reductions: Mapping[str, Mapping[str, Estimate]]  # system -> type|"total" -> % vs base
    pairwise: Mapping[str, tuple[Comparison, ...]]  # criterion -> comparisons
    agreement: tuple[Agreement, ...]
    rater_bias: tuple[RaterBias, ...]
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (no NaN, no tuples that JSON would not round-trip as lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Results:
        """Rebuild results stored with :meth:`as_dict` (e.g. the frozen results of a round)."""

        def est(d: Mapping[str, Any]) -> Estimate:
            return Estimate(**d)

        return cls(
            systems=tuple(data["systems"]),
            criteria=tuple(data["criteria"]),
            labels=dict(data["labels"]),
            error_types=tuple(data["error_types"]),
            baseline=data["baseline"],
            n_boot=data["n_boot"],
            seed=data["seed"],
            confidence=data["confidence"],
            n_items=data["n_items"],
            n_responses=data["n_responses"],
            n_ratings=data["n_ratings"],
            n_raters=data["n_raters"],
            likert={s: {c: est(e) for c, e in m.items()} for s, m in data["likert"].items()},
            hallucination={s: est(e) for s, e in data["hallucination"].items()},
            error_rates={
                s: {t: est(e) for t, e in m.items()} for s, m in data["error_rates"].items()
            },
            total_error_rate={s: est(e) for s, e in data["total_error_rate"].items()},
            reductions={
                s: {t: est(e) for t, e in m.items()} for s, m in data["reductions"].items()
            },
            pairwise={
                c: tuple(Comparison(**x) for x in comps) for c, comps in data["pairwise"].items()
            },
            agreement=tuple(Agreement(**a) for a in data["agreement"]),
            rater_bias=tuple(RaterBias(**b) for b in data["rater_bias"]),
            warnings=tuple(data.get("warnings", ())),
        )

    def label(self, criterion: str) -> str:
        """The display label of a Likert criterion (its key when none was configured)."""
        return self.labels.get(criterion, criterion)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------
# Small statistical building blocks (public so tests check them against known values)
# ---------------------------------------------------------------------------------------------


def majority(marked: np.ndarray, raters: np.ndarray) -> np.ndarray:
    """True where strictly more than half of a response's raters marked it.

    A tie (e.g. 1 of 2 raters, 2 of 4) is *not* a majority: a response counts as hallucinated
    only when most of its raters say so.

    >>> majority(np.array([2, 1, 1, 2]), np.array([3, 3, 2, 4])).tolist()
    [True, False, False, False]
    """
    return 2 * np.asarray(marked) > np.asarray(raters)


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
    """The (1-confidence)/2 and (1+confidence)/2 percentiles of each column: shape 2 x k."""
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
    """(mean, low, high) of one sample with a seeded percentile bootstrap."""
    rng = np.random.default_rng(seed)
    means, low, high = bootstrap_means(
        np.asarray(values, dtype=float), n_boot=n_boot, rng=rng, confidence=confidence
    )
    return float(means[0]), float(low[0]), float(high[0])


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


# ---------------------------------------------------------------------------------------------
# compute_results
# ---------------------------------------------------------------------------------------------


@dataclass
class _Encoded:
    """The ratings as integer-indexed numpy arrays (one entry per RatingRow)."""

    items: list[str]
    raters: list[str]
    unit_item: np.ndarray  # unit -> item index
    unit_system: np.ndarray  # unit -> system index
    row_unit: np.ndarray  # row -> unit index
    row_rater: np.ndarray  # row -> rater index
    scores: np.ndarray  # rows x criteria, NaN = not rated
    hallucination: np.ndarray  # rows, bool
    errors: np.ndarray  # rows x error types, bool


def _describe(index: int, row: RatingRow) -> str:
    return f"row {index} (item={row.item!r}, system={row.system!r}, rater={row.rater!r})"


def _check_score(index: int, row: RatingRow, key: str, score: object) -> None:
    """Raise a RatingDataError unless score is an integer on the Likert scale."""
    if isinstance(score, bool) or not isinstance(score, int | np.integer):
        raise RatingDataError(
            f"{_describe(index, row)}: scores[{key!r}] must be an integer "
            f"{LIKERT_MIN}..{LIKERT_MAX}, got {score!r}"
        )
    if not LIKERT_MIN <= score <= LIKERT_MAX:
        raise RatingDataError(
            f"{_describe(index, row)}: scores[{key!r}] = {score} is outside "
            f"{LIKERT_MIN}..{LIKERT_MAX}"
        )


def _encode(
    rows: Iterable[RatingRow],
    systems: Sequence[str],
    criteria: Sequence[str],
    error_types: Sequence[str],
) -> _Encoded:
    system_index = {s: i for i, s in enumerate(systems)}
    item_index: dict[str, int] = {}
    rater_index: dict[str, int] = {}
    unit_index: dict[tuple[int, int], int] = {}
    seen: set[tuple[int, int]] = set()
    unit_item: list[int] = []
    unit_system: list[int] = []
    row_unit: list[int] = []
    row_rater: list[int] = []
    score_rows: list[list[Any]] = []
    halluc: list[bool] = []
    error_rows: list[list[bool]] = []
    criterion_set = frozenset(criteria)
    error_set = frozenset(error_types)
    no_errors = [False] * len(error_types)
    lo, hi = LIKERT_MIN, LIKERT_MAX
    for i, row in enumerate(rows):
        s = system_index.get(row.system)
        if s is None:
            raise RatingDataError(
                f"{_describe(i, row)}: system {row.system!r} is not one of the round's systems"
            )
        it = item_index.setdefault(row.item, len(item_index))
        r = rater_index.setdefault(row.rater, len(rater_index))
        u = unit_index.get((it, s))
        if u is None:
            u = unit_index[(it, s)] = len(unit_item)
            unit_item.append(it)
            unit_system.append(s)
        if (u, r) in seen:
            raise RatingDataError(
                f"{_describe(i, row)}: this rater already rated this response; pass only the "
                "latest version of each rating"
            )
        seen.add((u, r))
        scores = row.scores
        if not scores.keys() <= criterion_set:
            unknown = sorted(set(scores) - criterion_set)[0]
            raise RatingDataError(
                f"{_describe(i, row)}: field scores has unknown criterion {unknown!r} "
                f"(expected one of {list(criteria)})"
            )
        values = [scores.get(c) for c in criteria]
        for key, score in zip(criteria, values, strict=True):
            # Fast path for the common case; anything else gets the full check and message.
            if score is not None and not (type(score) is int and lo <= score <= hi):
                _check_score(i, row, key, score)
        flags = no_errors
        if row.error_types:
            if not row.error_types <= error_set:
                unknown = sorted(row.error_types - error_set)[0]
                raise RatingDataError(
                    f"{_describe(i, row)}: field error_types has unknown type {unknown!r} "
                    f"(expected a subset of {list(error_types)})"
                )
            flags = [t in row.error_types for t in error_types]
        row_unit.append(u)
        row_rater.append(r)
        score_rows.append(values)
        halluc.append(bool(row.hallucination))
        error_rows.append(flags)
    n_rows = len(row_unit)
    return _Encoded(
        items=list(item_index),
        raters=list(rater_index),
        unit_item=np.asarray(unit_item, dtype=np.int64),
        unit_system=np.asarray(unit_system, dtype=np.int64),
        row_unit=np.asarray(row_unit, dtype=np.int64),
        row_rater=np.asarray(row_rater, dtype=np.int64),
        # None (not rated) becomes NaN in the float conversion.
        scores=np.asarray(score_rows, dtype=float).reshape(n_rows, len(criteria)),
        hallucination=np.asarray(halluc, dtype=bool),
        errors=np.asarray(error_rows, dtype=bool).reshape(n_rows, len(error_types)),
    )


@dataclass
class _Bootstrap:
    """Estimates of many columns, with the replicates kept for derived figures (reductions)."""

    estimates: list[Estimate]
    replicates: np.ndarray  # n_boot x k replicate means (unscaled)
    group: list[int]  # columns with the same group were resampled with the same draws


def _estimates(
    values: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    confidence: float,
    scales: Sequence[float],
) -> _Bootstrap:
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
    return _Bootstrap([e for e in out if e is not None], replicates, group_of)


def _unit_sums(enc: _Encoded, values: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit sums and counts of each column of a rows x k matrix (NaN = missing)."""
    present = ~np.isnan(values)
    k = values.shape[1]
    sums = np.zeros((n_units, k))
    counts = np.zeros((n_units, k), dtype=np.int64)
    for j in range(k):
        sums[:, j] = np.bincount(
            enc.row_unit, weights=np.where(present[:, j], values[:, j], 0.0), minlength=n_units
        )
        counts[:, j] = np.bincount(enc.row_unit, weights=present[:, j], minlength=n_units)
    return sums, counts


def compute_results(
    rows: Iterable[RatingRow],
    *,
    systems: Sequence[str],
    criteria: Sequence[str] | Mapping[str, str] = DEFAULT_CRITERIA,
    baseline: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    error_types: Sequence[str] = ERROR_TYPES,
    confidence: float = 0.95,
) -> Results:
    """All statistics of a round from its ratings.

    ``criteria`` are the Likert criterion keys (or a mapping key -> label); ``systems`` fixes
    the row order of every table; ``baseline`` is the system the relative reductions of Table 3
    compare with. Bad rows raise :class:`RatingDataError` naming the row and field; degenerate
    but valid input (one system, an unrated criterion, one rater per response) gives ``None``
    values with reasons and entries in ``Results.warnings``.
    """
    systems = tuple(systems)
    if isinstance(criteria, Mapping):
        labels = {str(k): str(v) for k, v in criteria.items()}
    else:
        labels = {c: DEFAULT_CRITERIA.get(c, c) for c in criteria}
    criteria_keys = tuple(labels)
    error_types = tuple(error_types)
    if len(set(systems)) != len(systems):
        raise RatingDataError(f"systems must be distinct, got {list(systems)}")
    if baseline is not None and baseline not in systems:
        raise RatingDataError(f"baseline {baseline!r} is not one of the systems {list(systems)}")
    if not 0 < confidence < 1:
        raise RatingDataError(f"confidence must be between 0 and 1, got {confidence}")
    if n_boot < 0:
        raise RatingDataError(f"n_boot must be >= 0, got {n_boot}")

    enc = _encode(rows, systems, criteria_keys, error_types)
    n_items, n_units = len(enc.items), len(enc.unit_item)
    notes: list[str] = []
    if len(systems) < 2:
        notes.append("Pairwise comparisons need at least two systems; this round has fewer.")
    if enc.row_unit.size == 0:
        notes.append("No ratings yet: every figure is shown as — until raters submit ratings.")

    # Per-response (unit) aggregates.
    score_sums, score_counts = _unit_sums(enc, enc.scores, n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_means = np.where(score_counts > 0, score_sums / np.maximum(score_counts, 1), np.nan)
    raters_per_unit = np.bincount(enc.row_unit, minlength=n_units)
    halluc_marks = np.bincount(enc.row_unit, weights=enc.hallucination, minlength=n_units)
    unit_halluc = majority(halluc_marks, raters_per_unit)
    unit_errors = np.zeros((n_units, len(error_types)), dtype=bool)
    for e in range(len(error_types)):
        marks = np.bincount(enc.row_unit, weights=enc.errors[:, e], minlength=n_units)
        unit_errors[:, e] = majority(marks, raters_per_unit)

    # Items x systems x criteria matrix of per-item means (NaN = not rated), for the paired
    # Wilcoxon tests.
    item_means = np.full((n_items, len(systems), len(criteria_keys)), np.nan)
    item_means[enc.unit_item, enc.unit_system] = unit_means

    # One items x (systems x measures) matrix, NaN where an item has no rating of that system
    # or criterion. Per system the measures are: the Likert per-item means, then the per-response
    # majority indicators (hallucination, each error type) and their mean over types. Systems
    # rated on the same items share the bootstrap draws (a paired bootstrap over items).
    k, n_types = len(criteria_keys), len(error_types)
    per_system = k + 1 + n_types + 1
    unit_binary = np.column_stack(
        [
            unit_halluc,
            unit_errors,
            unit_errors.mean(axis=1) if n_types else np.full(n_units, np.nan),
        ]
    ).astype(float)
    matrix = np.full((n_items, len(systems) * per_system), np.nan)
    columns = enc.unit_system[:, None] * per_system + np.arange(per_system)[None, :]
    matrix[enc.unit_item[:, None], columns] = np.column_stack([unit_means, unit_binary])
    scales = ([1.0] * k + [100.0] * (1 + n_types + 1)) * len(systems)
    boot = _estimates(
        matrix,
        n_boot=n_boot,
        rng=np.random.default_rng(seed),
        confidence=confidence,
        scales=scales,
    )

    likert: dict[str, dict[str, Estimate]] = {}
    hallucination: dict[str, Estimate] = {}
    error_rates: dict[str, dict[str, Estimate]] = {}
    total_error: dict[str, Estimate] = {}
    for s, system in enumerate(systems):
        part = boot.estimates[s * per_system : (s + 1) * per_system]
        likert[system] = dict(zip(criteria_keys, part[:k], strict=True))
        hallucination[system] = part[k]
        error_rates[system] = dict(zip(error_types, part[k + 1 : k + 1 + n_types], strict=True))
        total_error[system] = part[-1]
        if not n_types:
            total_error[system] = Estimate(None, None, None, 0, "no error types configured")
        if not np.any(enc.unit_system == s):
            notes.append(f"System {system!r} has no ratings yet.")
            continue
        for c, estimate in likert[system].items():
            if estimate.value is None:
                notes.append(f"Nobody rated {labels[c]!r} for system {system!r}.")

    reductions: dict[str, dict[str, Estimate]] = {}
    if baseline is not None:
        base = systems.index(baseline)
        for s, system in enumerate(systems):
            if s == base:
                continue
            reductions[system] = {
                measure: _reduction(boot, base * per_system + j, s * per_system + j, confidence)
                for j, measure in enumerate((*error_types, TOTAL_ERROR), start=k + 1)
            }
    pairwise = _pairwise(item_means, systems, criteria_keys)
    agreement = _agreement(enc, n_units, criteria_keys, error_types)
    for a in agreement:
        if a.alpha is None and a.n_units == 0 and enc.row_unit.size:
            notes.append(
                f"Agreement on {a.measure!r} is undefined: no response has two ratings of it."
            )
            break
    rater_bias = _rater_bias(enc, n_units, criteria_keys)

    return Results(
        systems=systems,
        criteria=criteria_keys,
        labels=labels,
        error_types=error_types,
        baseline=baseline,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        n_items=n_items,
        n_responses=n_units,
        n_ratings=int(enc.row_unit.size),
        n_raters=len(enc.raters),
        likert=likert,
        hallucination=hallucination,
        error_rates=error_rates,
        total_error_rate=total_error,
        reductions=reductions,
        pairwise=pairwise,
        agreement=agreement,
        rater_bias=rater_bias,
        warnings=tuple(dict.fromkeys(notes)),
    )


def _reduction(boot: _Bootstrap, base_column: int, column: int, confidence: float) -> Estimate:
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


def _wilcoxon(criterion: str, a: str, b: str, x: np.ndarray, y: np.ndarray) -> Comparison:
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


def _pairwise(
    item_means: np.ndarray, systems: Sequence[str], criteria: Sequence[str]
) -> dict[str, tuple[Comparison, ...]]:
    out: dict[str, tuple[Comparison, ...]] = {}
    for c, criterion in enumerate(criteria):
        raw: list[Comparison] = []
        for a, b in combinations(range(len(systems)), 2):
            raw.append(
                _wilcoxon(
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


def _value_counts(units: np.ndarray, codes: np.ndarray, n_units: int, n_values: int) -> np.ndarray:
    """units x values matrix: how many ratings of each unit have each value code."""
    flat = np.bincount(units * n_values + codes, minlength=n_units * n_values)
    return flat.reshape(n_units, n_values)


def _agreement(
    enc: _Encoded, n_units: int, criteria: Sequence[str], error_types: Sequence[str]
) -> tuple[Agreement, ...]:
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


def _rater_bias(enc: _Encoded, n_units: int, criteria: Sequence[str]) -> tuple[RaterBias, ...]:
    sums, counts = _unit_sums(enc, enc.scores, n_units)
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
