"""The result tables of an evaluation round, in the layouts of the preprint's Tables 5 and 3.

A :class:`Table` holds display text and the numbers behind it, and renders itself as CSV,
Markdown, LaTeX (booktabs) and HTML. System names, rater names and criterion labels are
untrusted text: every renderer escapes them for its own format. A figure that cannot be
computed is shown as "—" and a note under the table says why; CSV leaves it empty.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from webapp.evaluation.stats import (
    ERROR_TYPE_LABELS,
    HALLUCINATION,
    TOTAL_ERROR,
    Estimate,
    Results,
    relative_reduction,
)

MISSING = "—"
ARROWS = {"up": "↑", "down": "↓"}
CI_STYLES = ("interval", "pm", "none")


@dataclass(frozen=True)
class Column:
    """A column header: label, an optional better-direction arrow and a unit suffix."""

    label: str
    direction: str | None = None  # "up" (higher is better), "down" or None
    unit: str = ""
    numeric: bool = True
    has_ci: bool = False  # CSV adds "<header> CI low/high" columns

    @property
    def header(self) -> str:
        """The header text with its arrow and unit, as Markdown and HTML show it."""
        return " ".join(p for p in (self.label, ARROWS.get(self.direction or ""), self.unit) if p)


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown and the number behind it (None for text or missing)."""

    text: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    best: bool = False  # the best value of its column (shown bold)
    reason: str | None = None  # why a figure is missing or has no interval (goes into notes)


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table; ``key`` names export files (e.g. ``table5.csv``)."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()
    strong_rows: frozenset[int] = field(default_factory=frozenset)  # e.g. the aggregated row

    def to_csv(self) -> str:
        """CSV with numbers at full precision, CI bounds in their own columns, no notes."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header: list[str] = []
        for column in self.columns:
            header.append(_csv_text(column.header))
            if column.has_ci:
                header += [
                    _csv_text(f"{column.label} CI low"),
                    _csv_text(f"{column.label} CI high"),
                ]
        writer.writerow(header)
        for row in self.rows:
            line: list[str] = []
            for column, cell in zip(self.columns, row, strict=True):
                if column.numeric:
                    line.append(_csv_number(cell.value))
                else:
                    line.append(_csv_text(cell.text))
                if column.has_ci:
                    line += [_csv_number(cell.ci_low), _csv_number(cell.ci_high)]
            writer.writerow(line)
        return out.getvalue()

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the title above and the notes below."""
        lines = [f"**{_md(self.title)}**", ""]
        lines.append("| " + " | ".join(_md(c.header) for c in self.columns) + " |")
        lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in self.columns) + "|")
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            cells = [
                _md_bold(_md(cell.text, trusted=column.numeric), cell.best or strong)
                for column, cell in zip(self.columns, row, strict=True)
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {_md(note)}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
        spec = "".join("r" if c.numeric else "l" for c in self.columns)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + latex_escape(self.title) + "}",
            r"\label{tab:" + re.sub(r"[^A-Za-z0-9:-]", "-", self.key) + "}",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            " & ".join(_latex_header(c) for c in self.columns) + r" \\",
            r"\midrule",
        ]
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            if strong and index > 0:
                lines.append(r"\midrule")
            cells = [_latex_bold(latex_escape(c.text), c.best or strong) for c in row]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            notes = " ".join(latex_escape(n) for n in self.notes)
            lines.append(r"\par\smallskip{\footnotesize " + notes + "}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML fragment: the table with a caption, then its notes; all text escaped."""
        esc = html.escape
        parts = [
            f'<div class="eval-table" id="eval-table-{esc(self.key)}">',
            "<table>",
            f"<caption>{esc(self.title)}</caption>",
            "<thead><tr>",
        ]
        for column in self.columns:
            css = "num" if column.numeric else "text"
            parts.append(f'<th scope="col" class="{css}">{esc(column.header)}</th>')
        parts.append("</tr></thead><tbody>")
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            parts.append('<tr class="strong">' if strong else "<tr>")
            for position, (column, cell) in enumerate(zip(self.columns, row, strict=True)):
                text = esc(cell.text)
                if cell.best or strong:
                    text = f"<strong>{text}</strong>"
                css = "num" if column.numeric else "text"
                if cell.text == MISSING:
                    css += " missing"
                tag = "th" if position == 0 else "td"
                scope = ' scope="row"' if position == 0 else ""
                parts.append(f'<{tag}{scope} class="{css}">{text}</{tag}>')
            parts.append("</tr>")
        parts.append("</tbody></table>")
        if self.notes:
            parts.append('<ul class="eval-table-notes">')
            parts += [f"<li>{esc(note)}</li>" for note in self.notes]
            parts.append("</ul>")
        parts.append("</div>")
        return "\n".join(parts) + "\n"

    def render(self, fmt: str) -> str:
        """Render by format name: csv, md (markdown), tex (latex) or html."""
        renderers: dict[str, Callable[[], str]] = {
            "csv": self.to_csv,
            "md": self.to_markdown,
            "markdown": self.to_markdown,
            "tex": self.to_latex,
            "latex": self.to_latex,
            "html": self.to_html,
        }
        if fmt not in renderers:
            raise ValueError(f"unknown table format {fmt!r}; use one of {sorted(renderers)}")
        return renderers[fmt]()


# --- escaping -------------------------------------------------------------------------------

_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Brackets are braced so a cell starting with "[" is never read as the optional argument
    # of the preceding row's "\\".
    "[": "{[}",
    "]": "{]}",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "—": "---",
    "\u2013": "--",  # en dash
    "\u2212": r"$-$",  # minus sign
    "\u03b1": r"$\alpha$",  # alpha
}


def _one_line(text: str) -> str:
    # Newlines and other control characters would break a table row in every format.
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(text))


def latex_escape(text: str) -> str:
    """Escape text for LaTeX, character by character (so no escape is escaped twice)."""
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in _one_line(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_TABLE_ONLY = re.compile(r"([\\|])")


def _md(text: str, *, trusted: bool = False) -> str:
    """Escape text for a Markdown table cell.

    Untrusted text gets its Markdown punctuation backslash-escaped (no emphasis, links or code
    spans); ``trusted`` text (numbers this module formatted) only needs the table's own pipes.
    HTML-significant characters always become entities, since Markdown passes raw HTML through.
    """
    pattern = _MD_TABLE_ONLY if trusted else _MD_SPECIAL
    escaped = pattern.sub(r"\\\1", _one_line(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold and text else text


def _latex_bold(text: str, bold: bool) -> str:
    return r"\textbf{" + text + "}" if bold and text else text


def _latex_header(column: Column) -> str:
    return latex_escape(column.header)


def _csv_text(text: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheets (CSV injection): prefix a
    # quote so it stays text. Plain numbers such as "-3.5" are left alone.
    text = _one_line(text)
    if text and text[0] in "=+-@" and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_number(value: float | None) -> str:
    return "" if value is None else format(value, ".6g")


# --- formatting -----------------------------------------------------------------------------


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


# --- the tables -----------------------------------------------------------------------------


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
        columns.append(Column(label, "up", "(%)", has_ci=with_ci))

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
