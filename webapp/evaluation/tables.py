"""The result tables of an evaluation round, in the layouts of the preprint's Tables 5 and 3,
and the tables of agreement, pairwise tests and rater bias behind them.

Each builder turns ``Results`` into a ``table_render.Table`` (display text and the numbers
behind it), which renders itself as CSV, Markdown, LaTeX and HTML. A figure that cannot be
computed is shown as "—" and a note under the table says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from webapp.evaluation.stats.bootstrap import Estimate, relative_reduction
from webapp.evaluation.stats.ratings import ERROR_TYPE_LABELS, HALLUCINATION, TOTAL_ERROR
from webapp.evaluation.stats.results import Results
from webapp.evaluation.table_render import ARROWS, MISSING, Cell, Column, Table

CI_STYLES = ("interval", "pm", "none")


def _fmt(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _estimate_cell(estimate: Estimate, digits: int, ci_style: str) -> Cell:
    """'3.25 [3.18, 3.32]' (interval), '3.25 ± 0.07' (pm) or '3.25' (none)."""
    if estimate.value is None:
        return Cell(MISSING, reason=estimate.reason)
    text = _fmt(estimate.value, digits)
    if estimate.ci_low is not None and estimate.ci_high is not None:
        if ci_style == "interval":
            text += f" [{estimate.ci_low:.{digits}f}, {estimate.ci_high:.{digits}f}]"
        elif ci_style == "pm":
            half = max(estimate.value - estimate.ci_low, estimate.ci_high - estimate.value)
            text += f" ± {half:.{digits}f}"
    reason = estimate.reason if ci_style != "none" else None
    return Cell(text, estimate.value, estimate.ci_low, estimate.ci_high, reason=reason)


def _mark_best(rows: list[list[Cell]], columns: Sequence[Column]) -> list[list[Cell]]:
    """Bold the best value of each column with an arrow (all of them on a tie)."""
    for j, column in enumerate(columns):
        if column.direction not in ARROWS:
            continue
        values = [v for row in rows if (v := row[j].value) is not None]
        if len(values) < 2:
            continue
        best = max(values) if column.direction == "up" else min(values)
        for row in rows:
            cell = row[j]
            if cell.value is not None and round(cell.value, 9) == round(best, 9):
                row[j] = replace(cell, best=True)
    return rows


def _check_ci_style(ci_style: str) -> None:
    if ci_style not in CI_STYLES:
        raise ValueError(f"ci_style must be one of {CI_STYLES}, got {ci_style!r}")


def _name(names: Mapping[str, str], system: str) -> str:
    return names.get(system, system)


def _interval_note(results: Results, ci_style: str) -> str | None:
    if ci_style == "none" or results.n_boot <= 0:
        return None
    level = round(results.confidence * 100)
    shape = (
        "[low, high]"
        if ci_style == "interval"
        else "± the larger distance from the mean to a bound of"
    )
    return (
        f"{shape} the {level}% percentile bootstrap interval over items "
        f"({results.n_boot} replicates, seed {results.seed})."
    )


def _missing_notes(rows: Sequence[Sequence[Cell]], default: str) -> list[str]:
    """One note per distinct reason a figure is missing ("—") or shown without an interval."""
    notes: dict[str, None] = {}
    for row in rows:
        for cell in row:
            if cell.text == MISSING:
                notes.setdefault(f"{MISSING}: {cell.reason or default}.", None)
            elif cell.reason:
                notes.setdefault(f"No interval: {cell.reason}.", None)
    return list(notes)


def _items_note(results: Results, names: Mapping[str, str]) -> str:
    counts = {s: results.hallucination[s].n for s in results.systems}
    if len(set(counts.values())) <= 1:
        n = next(iter(counts.values()), 0)
        return f"{n} items per system, {results.n_ratings} ratings by {results.n_raters} raters."
    per_system = ", ".join(f"{_name(names, s)}: {n}" for s, n in counts.items())
    return f"Items rated per system: {per_system}; {results.n_ratings} ratings."


def table5(
    results: Results,
    names: Mapping[str, str],
    *,
    ci_style: str = "interval",
    hallucination_before: str | None = "quality",
    title: str = "Human evaluation results",
) -> Table:
    """Table 5 of the preprint: per system the Likert means and the hallucination rate.

    Columns follow the paper: the Likert criteria in the round's order with the hallucination
    rate placed just before ``hallucination_before`` (the paper's "Overall Quality"), or last
    when that criterion is not in the round.
    """
    _check_ci_style(ci_style)
    order: list[str] = list(results.criteria)
    if hallucination_before in order:
        order.insert(order.index(hallucination_before), HALLUCINATION)
    else:
        order.append(HALLUCINATION)
    with_ci = ci_style != "none" and results.n_boot > 0
    columns = [Column("Method", numeric=False)]
    for key in order:
        if key == HALLUCINATION:
            columns.append(Column("Hallucination Rate", "down", "(%)", has_ci=with_ci))
        else:
            columns.append(Column(results.label(key), "up", "(1-5 Scale)", has_ci=with_ci))
    rows: list[list[Cell]] = []
    for system in results.systems:
        row = [Cell(_name(names, system))]
        for key in order:
            if key == HALLUCINATION:
                row.append(_estimate_cell(results.hallucination[system], 1, ci_style))
            else:
                row.append(_estimate_cell(results.likert[system][key], 2, ci_style))
        rows.append(row)
    rows = _mark_best(rows, columns)
    notes = [
        "Likert scores: mean over items of the mean of the item's raters. Hallucination rate: "
        "% of responses marked by a strict majority of their raters.",
        _items_note(results, names),
    ]
    if (note := _interval_note(results, ci_style)) is not None:
        notes.append(note)
    notes += _missing_notes(rows, "not computable from the ratings so far")
    return Table(
        key="table5",
        title=title,
        columns=tuple(columns),
        rows=tuple(tuple(r) for r in rows),
        notes=tuple(notes),
    )


def table3(
    results: Results,
    names: Mapping[str, str],
    baseline: str | None = None,
    *,
    ci_style: str = "none",
    labels: Mapping[str, str] | None = None,
    title: str = "Error analysis and reduction against the baseline",
) -> Table:
    """Table 3 of the preprint: % of responses with each error type, and the reduction.

    One column per system (the baseline first), then one "Reduction (%)" column per other
    system: (baseline - system) / baseline x 100. The last row aggregates: the mean of the
    type percentages, and the reduction of that mean.
    """
    _check_ci_style(ci_style)
    baseline = baseline if baseline is not None else results.baseline
    if baseline is None or baseline not in results.systems:
        raise ValueError(
            f"table3 needs a baseline among the systems {list(results.systems)}, got {baseline!r}"
        )
    labels = {**ERROR_TYPE_LABELS, **(labels or {})}
    others = [s for s in results.systems if s != baseline]
    with_ci = ci_style != "none" and results.n_boot > 0
    columns = [Column("Error Type", numeric=False)]
    columns.append(Column(f"{_name(names, baseline)} (Baseline)", None, "(%)", has_ci=with_ci))
    columns += [Column(_name(names, s), None, "(%)", has_ci=with_ci) for s in others]
    for system in others:
        label = "Reduction" if len(others) == 1 else f"Reduction: {_name(names, system)}"
        # No better-direction arrow: the preprint heads this column plain "Reduction (%)".
        columns.append(Column(label, None, "(%)", has_ci=with_ci))

    stored = results.reductions if baseline == results.baseline else {}

    def reduction(system: str, measure: str, base: Estimate, other: Estimate) -> Estimate:
        if system in stored and measure in stored[system]:
            return stored[system][measure]
        # Another baseline than the one computed with: point estimate only.
        return Estimate(relative_reduction(base.value, other.value), None, None, 0)

    rows: list[list[Cell]] = []
    measures = [(t, labels.get(t, t)) for t in results.error_types]
    measures.append((TOTAL_ERROR, "Total Error Rate (Aggregated)"))
    for measure, label in measures:
        rates = (
            {s: results.total_error_rate[s] for s in results.systems}
            if measure == TOTAL_ERROR
            else {s: results.error_rates[s][measure] for s in results.systems}
        )
        row = [Cell(label), _estimate_cell(rates[baseline], 1, ci_style)]
        row += [_estimate_cell(rates[s], 1, ci_style) for s in others]
        row += [
            _estimate_cell(reduction(s, measure, rates[baseline], rates[s]), 1, ci_style)
            for s in others
        ]
        rows.append(row)
    notes = [
        "% of responses with the error type tagged by a strict majority of their raters; the "
        "aggregated row is the mean of the type percentages.",
        "Reduction = (baseline - system) / baseline x 100, from unrounded rates.",
    ]
    if (note := _interval_note(results, ci_style)) is not None:
        notes.append(note)
    notes += _missing_notes(rows, "not computable from the ratings so far")
    return Table(
        key="table3",
        title=title,
        columns=tuple(columns),
        rows=tuple(tuple(r) for r in rows),
        notes=tuple(notes),
        strong_rows=frozenset({len(rows) - 1}),
    )


def _measure_label(results: Results, measure: str, labels: Mapping[str, str]) -> str:
    if measure == HALLUCINATION:
        return "Hallucination"
    if measure.startswith("error:"):
        error_type = measure.removeprefix("error:")
        return f"Error type: {labels.get(error_type, error_type)}"
    return results.label(measure)


def agreement_table(
    results: Results,
    *,
    error_labels: Mapping[str, str] | None = None,
    title: str = "Inter-rater agreement",
) -> Table:
    """Krippendorff's alpha and raw pairwise agreement per criterion, with the units used."""
    labels = {**ERROR_TYPE_LABELS, **(error_labels or {})}
    columns = (
        Column("Measure", numeric=False),
        Column("Level", numeric=False),
        Column("Krippendorff's alpha"),
        Column("Agreement", unit="(%)"),
        Column("Responses"),
        Column("Rater pairs"),
        Column("Note", numeric=False),
    )
    rows = []
    for a in results.agreement:
        rows.append(
            (
                Cell(_measure_label(results, a.measure, labels)),
                Cell(a.level),
                Cell(_fmt(a.alpha, 3), a.alpha),
                Cell(_fmt(a.percent_agreement, 1), a.percent_agreement),
                Cell(str(a.n_units), float(a.n_units)),
                Cell(str(a.n_pairs), float(a.n_pairs)),
                Cell(a.reason or ""),
            )
        )
    notes = [
        "Alpha: ordinal for Likert criteria, nominal for yes/no marks; units are responses "
        "(item, system) rated by two or more raters. Agreement: % of rater pairs on the same "
        "response giving the same value.",
        *_missing_notes(rows, "undefined, see the Note column"),
    ]
    return Table("agreement", title, columns, tuple(rows), tuple(notes))


def _p_text(p: float | None) -> str:
    if p is None:
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pairwise_table(
    results: Results,
    names: Mapping[str, str],
    *,
    alpha: float = 0.05,
    title: str = "Pairwise comparisons (Wilcoxon signed-rank, Holm-corrected)",
) -> Table:
    """One row per criterion and pair of systems: n, mean difference, W, p and Holm's p."""
    columns = (
        Column("Criterion", numeric=False),
        Column("System A", numeric=False),
        Column("System B", numeric=False),
        Column("Items"),
        Column("Mean difference (A - B)"),
        Column("W"),
        Column("p"),
        Column("p (Holm)"),
        Column("Effect r"),
        Column("Note", numeric=False),
    )
    rows = []
    for criterion in results.criteria:
        for c in results.pairwise.get(criterion, ()):
            note = c.reason or ""
            if c.p_holm is not None and c.p_holm < alpha:
                note = (note + "; " if note else "") + f"significant at {alpha:g}"
            rows.append(
                (
                    Cell(results.label(criterion)),
                    Cell(_name(names, c.system_a)),
                    Cell(_name(names, c.system_b)),
                    Cell(str(c.n), float(c.n)),
                    Cell(_signed(c.mean_difference), c.mean_difference),
                    Cell(_fmt(c.statistic, 1), c.statistic),
                    Cell(_p_text(c.p_value), c.p_value),
                    Cell(_p_text(c.p_holm), c.p_holm),
                    Cell(_signed(c.effect_size), c.effect_size),
                    Cell(note),
                )
            )
    notes = [
        "Per-item means (over the item's raters) of two systems on the items rated for both; "
        "scipy's two-sided Wilcoxon signed-rank test (zero differences dropped). Holm's "
        "step-down correction across all pairs of the same criterion. Effect r: matched-pairs "
        "rank-biserial correlation, -1..1, positive when A is rated higher.",
    ]
    if len(results.systems) < 2:
        notes.append("Fewer than two systems: nothing to compare.")
    notes += _missing_notes(rows, "see the Note column")
    return Table("pairwise", title, columns, tuple(rows), tuple(notes))


def _signed(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:+.{digits}f}"


def rater_bias_table(
    results: Results,
    rater_names: Mapping[str, str] | None = None,
    *,
    title: str = "Per-rater bias",
) -> Table:
    """Each rater's mean offset from the other raters of the same responses, per criterion."""
    rater_names = rater_names or {}
    columns = (
        Column("Rater", numeric=False),
        Column("Criterion", numeric=False),
        Column("Mean offset"),
        Column("Responses"),
        Column("Note", numeric=False),
    )
    rows = [
        (
            Cell(rater_names.get(b.rater, b.rater)),
            Cell(results.label(b.criterion)),
            Cell(_signed(b.offset), b.offset),
            Cell(str(b.n), float(b.n)),
            Cell(b.reason or ""),
        )
        for b in results.rater_bias
    ]
    notes = [
        "Offset: the rater's score minus the mean of the other raters of the same response, "
        "averaged over the responses the rater shares with at least one other rater. Positive "
        "= more lenient than colleagues.",
        *_missing_notes(rows, "undefined, see the Note column"),
    ]
    return Table("rater-bias", title, columns, tuple(rows), tuple(notes))


def all_tables(
    results: Results, names: Mapping[str, str], baseline: str | None = None
) -> list[Table]:
    """Every table of a round, Table 3 only when a baseline is known."""
    tables = [table5(results, names)]
    if (baseline or results.baseline) is not None:
        tables.append(table3(results, names, baseline))
    tables += [agreement_table(results), pairwise_table(results, names), rater_bias_table(results)]
    return tables
