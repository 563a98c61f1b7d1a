"""The statistics of an evaluation round, checked against published and hand-computed values."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats as scipy_stats

from training.formats import ERROR_TYPES
from webapp.evaluation.stats import bootstrap as stats
from webapp.evaluation.stats.agreement import krippendorff_alpha, pairwise_agreement
from webapp.evaluation.stats.bootstrap import bootstrap_ci, bootstrap_means
from webapp.evaluation.stats.ratings import RatingDataError, RatingRow
from webapp.evaluation.stats.results import Results, compute_results
from webapp.evaluation.stats.significance import holm

NAN = math.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers
# (rows) x 12 units (columns) with missing values. The paper reports alpha = 0.743 (nominal),
# 0.815 (ordinal), 0.849 (interval) and 0.797 (ratio).
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def value_counts(data: list[list[float]], values: list[int]) -> np.ndarray:
    """units x values counts from a raters x units reliability matrix."""
    counts = np.zeros((len(data[0]), len(values)), dtype=int)
    for rater in data:
        for unit, value in enumerate(rater):
            if not math.isnan(value):
                counts[unit, values.index(int(value))] += 1
    return counts


def row(item, system, rater, *, halluc=False, errors=(), **scores) -> RatingRow:
    return RatingRow(
        item=str(item),
        system=system,
        rater=str(rater),
        scores=scores,
        hallucination=halluc,
        error_types=frozenset(errors),
    )


def synthetic_rows(n_items, *, seed=1, systems=("base", "fgam"), shift=None, raters=3, pool=9):
    rng = np.random.default_rng(seed)
    shift = shift or {"base": 3.0, "fgam": 3.8}
    rows = []
    for i in range(n_items):
        chosen = rng.choice(pool, raters, replace=False)
        for system in systems:
            for r in chosen:
                score = int(np.clip(round(shift[system] + rng.normal(0, 0.9)), 1, 5))
                rows.append(row(i, system, f"r{r}", halluc=bool(rng.random() < 0.2), quality=score))
    return rows


# --- Krippendorff's alpha -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_alpha_reproduces_krippendorffs_published_example(level, expected):
    counts = value_counts(KRIPPENDORFF_2011, [1, 2, 3, 4, 5])
    alpha, reason = krippendorff_alpha(counts, values=[1, 2, 3, 4, 5], level=level)
    assert reason is None
    assert round(alpha, 3) == expected


def test_compute_results_gives_the_published_ordinal_alpha_for_a_likert_criterion():
    rows = [
        row(f"unit{u}", "only", f"observer{r}", quality=int(v))
        for r, ratings in enumerate(KRIPPENDORFF_2011)
        for u, v in enumerate(ratings)
        if not math.isnan(v)
    ]
    results = compute_results(rows, systems=["only"], criteria=["quality"], n_boot=50)
    quality = next(a for a in results.agreement if a.measure == "quality")
    assert quality.level == "ordinal"
    assert round(quality.alpha, 3) == 0.815
    # By hand: 55 rater pairs over the 11 units with two or more values, 43 of them agree.
    assert quality.n_units == 11
    assert quality.n_pairs == 55
    assert quality.percent_agreement == pytest.approx(43 / 55 * 100)


def test_alpha_is_none_with_a_reason_when_each_response_has_one_rater():
    rows = [row(i, s, f"r{i}", quality=1 + i % 5) for i in range(10) for s in ("a", "b")]
    results = compute_results(rows, systems=["a", "b"], criteria=["quality"], n_boot=20)
    quality = next(a for a in results.agreement if a.measure == "quality")
    assert quality.alpha is None
    assert "two or more raters" in quality.reason
    assert quality.percent_agreement is None
    assert any("no response has two ratings" in w for w in results.warnings)
    json.dumps(results.as_dict(), allow_nan=False)


def test_alpha_is_none_when_every_rating_is_identical_but_agreement_is_full():
    rows = [row(i, "a", r, quality=4) for i in range(5) for r in ("x", "y", "z")]
    results = compute_results(rows, systems=["a"], criteria=["quality"], n_boot=20)
    quality = next(a for a in results.agreement if a.measure == "quality")
    assert quality.alpha is None
    assert "same value" in quality.reason
    assert quality.percent_agreement == 100.0
    halluc = next(a for a in results.agreement if a.measure == "hallucination")
    assert halluc.level == "nominal" and halluc.alpha is None


def test_nominal_alpha_for_hallucination_matches_the_package_on_the_raw_matrix():
    import krippendorff

    rng = np.random.default_rng(3)
    marks = rng.random((3, 40)) < 0.3
    marks[:, :20] = marks[0, :20]  # make half the responses unanimous so alpha is positive
    rows = [
        row(f"i{u}", "a", f"r{r}", halluc=bool(marks[r, u]), quality=3)
        for r in range(3)
        for u in range(40)
    ]
    results = compute_results(rows, systems=["a"], criteria=["quality"], n_boot=20)
    halluc = next(a for a in results.agreement if a.measure == "hallucination")
    expected = krippendorff.alpha(marks.astype(float), level_of_measurement="nominal")
    assert halluc.alpha == pytest.approx(expected)


def test_pairwise_agreement_counts_pairs_within_units():
    # unit 1: three raters 2/1 split -> 1 of 3 pairs agree; unit 2: two raters agree -> 1 of 1.
    percent, units, pairs = pairwise_agreement(np.array([[2, 1], [0, 2], [1, 0]]))
    assert (units, pairs) == (2, 4)
    assert percent == pytest.approx(50.0)


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_for_a_seed_and_contains_the_mean():
    values = np.random.default_rng(0).integers(1, 6, size=200).astype(float)
    first = bootstrap_ci(values, n_boot=1000, seed=7)
    again = bootstrap_ci(values, n_boot=1000, seed=7)
    other = bootstrap_ci(values, n_boot=1000, seed=8)
    assert first == again
    assert first != other
    mean, low, high = first
    assert mean == pytest.approx(values.mean())
    assert low < mean < high


def test_bootstrap_matches_a_plain_loop_over_the_same_draws(monkeypatch):
    values = np.random.default_rng(1).normal(3, 1, size=(37, 2))
    expected_rng = np.random.default_rng(5)
    draws = expected_rng.integers(0, 37, size=(300, 37))
    replicate_means = np.array([values[d].mean(axis=0) for d in draws])
    expected_low, expected_high = np.percentile(replicate_means, [2.5, 97.5], axis=0)
    # A tiny chunk forces the chunked path; the draws must stay the same stream.
    monkeypatch.setattr(stats, "_BOOTSTRAP_CHUNK_VALUES", 37 * 7)
    means, low, high = bootstrap_means(values, n_boot=300, rng=np.random.default_rng(5))
    np.testing.assert_allclose(means, values.mean(axis=0))
    np.testing.assert_allclose(low, expected_low)
    np.testing.assert_allclose(high, expected_high)


def test_the_interval_narrows_as_items_grow():
    rng = np.random.default_rng(2)
    small = rng.integers(1, 6, size=50).astype(float)
    large = rng.integers(1, 6, size=5000).astype(float)
    _, small_low, small_high = bootstrap_ci(small, n_boot=1000, seed=0)
    _, large_low, large_high = bootstrap_ci(large, n_boot=1000, seed=0)
    assert (large_high - large_low) < (small_high - small_low) / 5


def test_likert_mean_is_the_mean_of_per_item_means():
    # item 1 has two raters (mean 2), item 2 has three (mean 5): mean of item means = 3.5,
    # whereas the mean of all five ratings would be 3.8.
    rows = [
        row(1, "a", "x", quality=1),
        row(1, "a", "y", quality=3),
        row(2, "a", "x", quality=5),
        row(2, "a", "y", quality=5),
        row(2, "a", "z", quality=5),
    ]
    results = compute_results(rows, systems=["a"], criteria=["quality"], n_boot=200, seed=1)
    estimate = results.likert["a"]["quality"]
    assert estimate.value == pytest.approx(3.5)
    assert estimate.n == 2
    assert 2.0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 5.0


def test_compute_results_is_reproducible_for_a_seed():
    rows = synthetic_rows(60)
    one = compute_results(rows, systems=["base", "fgam"], criteria=["quality"], seed=4)
    two = compute_results(rows, systems=["base", "fgam"], criteria=["quality"], seed=4)
    three = compute_results(rows, systems=["base", "fgam"], criteria=["quality"], seed=5)
    assert one.as_dict() == two.as_dict()
    assert one.likert["fgam"]["quality"] != three.likert["fgam"]["quality"]


# --- Wilcoxon + Holm ------------------------------------------------------------------------


def test_wilcoxon_matches_scipy_on_independently_computed_item_means():
    rows = synthetic_rows(
        80, systems=("base", "hacl", "fgam"), shift={"base": 3.0, "hacl": 3.1, "fgam": 3.6}
    )
    # Drop one system's ratings for some items: the test must pair only items rated for both.
    rows = [r for r in rows if not (r.system == "hacl" and int(r.item) % 7 == 0)]
    results = compute_results(
        rows, systems=["base", "hacl", "fgam"], criteria=["quality"], n_boot=10
    )
    by_unit = defaultdict(list)
    for r in rows:
        by_unit[(r.item, r.system)].append(r.scores["quality"])
    means = {unit: sum(v) / len(v) for unit, v in by_unit.items()}
    comparisons = results.pairwise["quality"]
    assert [(c.system_a, c.system_b) for c in comparisons] == [
        ("base", "hacl"),
        ("base", "fgam"),
        ("hacl", "fgam"),
    ]
    raw = []
    for comparison in comparisons:
        items = sorted(
            {i for (i, s) in means if s == comparison.system_a}
            & {i for (i, s) in means if s == comparison.system_b}
        )
        a = [means[(i, comparison.system_a)] for i in items]
        b = [means[(i, comparison.system_b)] for i in items]
        expected = scipy_stats.wilcoxon(a, b)
        assert comparison.n == len(items)
        assert comparison.statistic == pytest.approx(expected.statistic)
        assert comparison.p_value == pytest.approx(expected.pvalue)
        assert comparison.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
        # Rank-biserial r from the same signed ranks scipy uses: r = (R+ - R-) / (R+ + R-), and
        # for a two-sided test W = min(R+, R-).
        d = np.subtract(a, b)
        d = d[d != 0]
        ranks = scipy_stats.rankdata(np.abs(d))
        r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
        assert min(r_plus, r_minus) == pytest.approx(expected.statistic)
        assert comparison.effect_size == pytest.approx((r_plus - r_minus) / (r_plus + r_minus))
        raw.append(expected.pvalue)
    assert comparisons[0].n == 80 - len(range(0, 80, 7))
    assert [c.p_holm for c in comparisons] == pytest.approx(holm(raw))


def test_holm_on_a_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_and_capped_at_one():
    adjusted = holm([0.2, 0.5, 0.01, 0.6])
    # sorted: 0.01*4=0.04, 0.2*3=0.6, 0.5*2=1.0, 0.6*1=0.6 -> running max, capped: 1.0
    assert adjusted == pytest.approx([0.6, 1.0, 0.04, 1.0])
    assert holm([]) == []


def test_identical_systems_give_p_one_not_nan():
    rows = [row(i, s, r, quality=1 + i % 5) for i in range(10) for s in "ab" for r in "xyz"]
    results = compute_results(rows, systems=["a", "b"], criteria=["quality"], n_boot=10)
    (comparison,) = results.pairwise["quality"]
    assert comparison.p_value == 1.0 and comparison.p_holm == 1.0
    assert "zero" in comparison.reason


# --- majority rule, Table 3 -----------------------------------------------------------------


def test_a_response_counts_as_hallucinated_only_with_a_strict_majority():
    rows = [
        # item 1: 2 of 3 raters -> hallucinated
        row(1, "a", "x", halluc=True, quality=3),
        row(1, "a", "y", halluc=True, quality=3),
        row(1, "a", "z", quality=3),
        # item 2: 1 of 3 -> not
        row(2, "a", "x", halluc=True, quality=3),
        row(2, "a", "y", quality=3),
        row(2, "a", "z", quality=3),
        # item 3: 1 of 2, a tie -> not
        row(3, "a", "x", halluc=True, quality=3),
        row(3, "a", "y", quality=3),
        # item 4: 1 of 1 -> hallucinated
        row(4, "a", "x", halluc=True, quality=3),
    ]
    results = compute_results(rows, systems=["a"], criteria=["quality"], n_boot=100)
    assert results.hallucination["a"].value == pytest.approx(50.0)
    assert results.hallucination["a"].n == 4


def table3_rows(baseline_counts, fgam_counts, n_items=200):
    """200 items x 2 systems x 3 raters where exactly ``counts[type]`` responses of each system
    have the type tagged by 2 of 3 raters, plus a lone minority tag elsewhere that must not
    count."""
    rows = []
    for system, counts in (("base", baseline_counts), ("fgam", fgam_counts)):
        tags = defaultdict(lambda: defaultdict(set))
        for t, error_type in enumerate(ERROR_TYPES):
            for k in range(counts[error_type]):
                item = (k * 7 + t * 31) % n_items
                tags[item]["r1"].add(error_type)
                tags[item]["r2"].add(error_type)
            tags[(counts[error_type] * 7 + t * 31 + 3) % n_items]["r3"].add(error_type)
        for item in range(n_items):
            for rater in ("r1", "r2", "r3"):
                rows.append(row(item, system, rater, errors=tags[item][rater], quality=3))
    return rows


def test_table3_figures_of_the_paper_are_reproduced_from_ratings():
    base = {"object": 25, "attribute": 30, "spatial": 20, "reasoning": 18}  # 12.5 15 10 9 %
    fgam = {"object": 8, "attribute": 12, "spatial": 6, "reasoning": 9}  # 4.0 6.0 3.0 4.5 %
    results = compute_results(
        table3_rows(base, fgam),
        systems=["base", "fgam"],
        criteria=["quality"],
        baseline="base",
        n_boot=300,
    )
    rates = {t: results.error_rates["base"][t].value for t in ERROR_TYPES}
    assert rates == pytest.approx(
        {"object": 12.5, "attribute": 15.0, "spatial": 10.0, "reasoning": 9.0}
    )
    assert results.error_rates["fgam"]["object"].value == pytest.approx(4.0)
    reduction = {t: results.reductions["fgam"][t].value for t in ERROR_TYPES}
    assert reduction == pytest.approx(
        {"object": 68.0, "attribute": 60.0, "spatial": 70.0, "reasoning": 50.0}
    )
    # The aggregated row is the mean of the four type rates: 11.625 and 4.375, shown as 11.6
    # and 4.4 as in the paper.
    assert results.total_error_rate["base"].value == pytest.approx(11.625)
    assert results.total_error_rate["fgam"].value == pytest.approx(4.375)
    assert f"{results.total_error_rate['base'].value:.1f}" == "11.6"
    assert f"{results.total_error_rate['fgam'].value:.1f}" == "4.4"
    # Computed from the unrounded rates the total reduction is 62.4 %; the paper's 62.1 comes
    # from dividing the rounded figures, (11.6 - 4.4) / 11.6.
    total = results.reductions["fgam"]["total"]
    assert total.value == pytest.approx((11.625 - 4.375) / 11.625 * 100)
    assert round((11.6 - 4.4) / 11.6 * 100, 1) == 62.1
    assert total.ci_low <= total.value <= total.ci_high
    assert "base" not in results.reductions


def test_reduction_is_none_when_the_baseline_never_errs():
    rows = table3_rows({t: 0 for t in ERROR_TYPES}, {t: 5 for t in ERROR_TYPES})
    rows = [r for r in rows if not (r.system == "base" and r.error_types)]
    results = compute_results(
        rows, systems=["base", "fgam"], criteria=["quality"], baseline="base", n_boot=50
    )
    object_reduction = results.reductions["fgam"]["object"]
    assert object_reduction.value is None and "baseline rate is 0" in object_reduction.reason


# --- rater bias -----------------------------------------------------------------------------


def test_rater_bias_is_the_offset_from_the_other_raters_of_the_same_response():
    rng = np.random.default_rng(4)
    rows = []
    for i in range(30):
        truth = int(rng.integers(2, 5))
        rows.append(row(i, "a", "fair1", quality=truth))
        rows.append(row(i, "a", "fair2", quality=truth))
        rows.append(row(i, "a", "harsh", quality=truth - 1))
    rows.append(row(99, "a", "loner", quality=5))
    results = compute_results(rows, systems=["a"], criteria=["quality"], n_boot=10)
    bias = {b.rater: b for b in results.rater_bias}
    assert bias["harsh"].offset == pytest.approx(-1.0) and bias["harsh"].n == 30
    # fair1 vs mean(fair2, harsh) = truth - (truth - 0.5) = +0.5
    assert bias["fair1"].offset == pytest.approx(0.5)
    assert bias["loner"].offset is None and bias["loner"].n == 0


# --- degenerate and bad input ---------------------------------------------------------------


def test_one_system_and_an_unrated_criterion_are_explained_not_crashed():
    rows = [row(i, "a", r, quality=3 + (r == "y")) for i in range(4) for r in "xy"]
    results = compute_results(
        rows,
        systems=["a"],
        criteria={"quality": "Overall", "coherence": "Coherence"},
        n_boot=20,
    )
    assert results.pairwise == {"quality": (), "coherence": ()}
    assert any("at least two systems" in w for w in results.warnings)
    assert results.likert["a"]["coherence"].value is None
    assert any("Nobody rated 'Coherence'" in w for w in results.warnings)
    payload = json.dumps(results.as_dict(), allow_nan=False)
    assert "NaN" not in payload


def test_no_ratings_at_all_gives_empty_figures():
    results = compute_results([], systems=["a", "b"], criteria=["quality"], baseline="a")
    assert results.n_ratings == 0
    assert results.likert["a"]["quality"].value is None
    assert results.reductions["b"]["total"].value is None
    json.dumps(results.as_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(1, "ghost", "x", quality=3), "system 'ghost' is not one of"),
        (row(1, "a", "x", quality=6), "scores['quality'] = 6 is outside 1..5"),
        (row(1, "a", "x", quality=True), "must be an integer"),
        (row(1, "a", "x", fluency=3), "unknown criterion 'fluency'"),
        (row(1, "a", "x", quality=3, errors={"grammar"}), "unknown type 'grammar'"),
        (row(0, "a", "x", quality=2), "already rated this response"),
    ],
)
def test_bad_rows_raise_an_error_naming_the_row_and_field(bad, message):
    rows = [row(0, "a", "x", quality=3), bad]
    with pytest.raises(RatingDataError, match="row 1 ") as caught:
        compute_results(rows, systems=["a", "b"], criteria=["quality"], n_boot=10)
    assert message in str(caught.value)


def test_an_unknown_baseline_is_rejected():
    with pytest.raises(RatingDataError, match="baseline 'c'"):
        compute_results([], systems=["a", "b"], baseline="c")


def test_results_round_trip_through_json():
    rows = synthetic_rows(40)
    results = compute_results(
        rows, systems=["base", "fgam"], criteria=["quality"], baseline="base", n_boot=100
    )
    restored = Results.from_dict(json.loads(json.dumps(results.as_dict(), allow_nan=False)))
    assert restored.as_dict() == results.as_dict()
    assert restored.likert["fgam"]["quality"] == results.likert["fgam"]["quality"]


def test_the_docstring_examples_hold():
    import doctest

    failures, attempted = doctest.testmod(stats)
    assert attempted >= 3
    assert failures == 0
