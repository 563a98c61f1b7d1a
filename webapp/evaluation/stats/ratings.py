"""What a rating of an evaluation round is, and the ratings as arrays.

A :class:`RatingRow` is one rater's judgement of one system's response to one item: Likert
scores on the round's criteria, a hallucination mark and error-type tags. :func:`encode_ratings`
checks the rows (a bad one raises :class:`RatingDataError` naming the row and field) and turns
them into integer-indexed numpy arrays, which every statistic of the round reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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


class RatingDataError(ValueError):
    """Bad input to ``compute_results``; the message names the row and field."""


@dataclass(frozen=True)
class RatingRow:
    """One rater's rating of one system's response to one item."""

    item: str
    system: str
    rater: str
    scores: Mapping[str, int]  # Likert criterion key -> 1..5; a missing key = not rated
    hallucination: bool
    error_types: frozenset[str]  # subset of the round's error types


@dataclass
class EncodedRatings:
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


def encode_ratings(
    rows: Iterable[RatingRow],
    systems: Sequence[str],
    criteria: Sequence[str],
    error_types: Sequence[str],
) -> EncodedRatings:
    """The rows as arrays, checked on the way: a system outside ``systems``, a rater rating the
    same response twice, an unknown criterion or error type, or a score off the Likert scale
    raises :class:`RatingDataError` naming the row and field."""
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
    return EncodedRatings(
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


def unit_sums(
    enc: EncodedRatings, values: np.ndarray, n_units: int
) -> tuple[np.ndarray, np.ndarray]:
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
