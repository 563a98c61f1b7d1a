"""``compute_results``: every statistic of a round from its ratings, as one ``Results``.

Ratings are aggregated per response (means of Likert scores, the strict-majority rule for the
marks), then per item; the bootstrap, the significance tests, the agreement and the rater bias
come from their own modules (``webapp.evaluation.stats`` lists them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training.formats import ERROR_TYPES
from webapp.evaluation.stats.agreement import Agreement, measure_agreement
from webapp.evaluation.stats.bootstrap import Estimate, paired_estimates, reduction_estimate
from webapp.evaluation.stats.rater_bias import RaterBias, measure_rater_bias
from webapp.evaluation.stats.ratings import (
    DEFAULT_CRITERIA,
    TOTAL_ERROR,
    RatingDataError,
    RatingRow,
    encode_ratings,
    unit_sums,
)
from webapp.evaluation.stats.significance import Comparison, pairwise_comparisons


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


def majority(marked: np.ndarray, raters: np.ndarray) -> np.ndarray:
    """True where strictly more than half of a response's raters marked it.

    A tie (e.g. 1 of 2 raters, 2 of 4) is *not* a majority: a response counts as hallucinated
    only when most of its raters say so.

    >>> majority(np.array([2, 1, 1, 2]), np.array([3, 3, 2, 4])).tolist()
    [True, False, False, False]
    """
    return 2 * np.asarray(marked) > np.asarray(raters)


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

    enc = encode_ratings(rows, systems, criteria_keys, error_types)
    n_items, n_units = len(enc.items), len(enc.unit_item)
    notes: list[str] = []
    if len(systems) < 2:
        notes.append("Pairwise comparisons need at least two systems; this round has fewer.")
    if enc.row_unit.size == 0:
        notes.append("No ratings yet: every figure is shown as — until raters submit ratings.")

    # Per-response (unit) aggregates.
    score_sums, score_counts = unit_sums(enc, enc.scores, n_units)
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
    boot = paired_estimates(
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
                measure: reduction_estimate(
                    boot, base * per_system + j, s * per_system + j, confidence
                )
                for j, measure in enumerate((*error_types, TOTAL_ERROR), start=k + 1)
            }
    pairwise = pairwise_comparisons(item_means, systems, criteria_keys)
    agreement = measure_agreement(enc, n_units, criteria_keys, error_types)
    for a in agreement:
        if a.alpha is None and a.n_units == 0 and enc.row_unit.size:
            notes.append(
                f"Agreement on {a.measure!r} is undefined: no response has two ratings of it."
            )
            break
    rater_bias = measure_rater_bias(enc, n_units, criteria_keys)

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
