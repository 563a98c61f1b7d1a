"""Result tables: the paper's layouts, every export format, and escaping of hostile names."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest

from tests.evaluation.test_stats import KRIPPENDORFF_2011, row, table3_rows
from training.formats import ERROR_TYPES
from webapp.evaluation import tables
from webapp.evaluation.stats.results import compute_results

SYSTEMS = ["base", "hacl", "fgam"]
PAPER_NAMES = {
    "base": "LLaVA-1.5-7B [11]",
    "hacl": "LLaVA-1.5-7B + HACL [43]",
    "fgam": "LLaVA-1.5-7B + FGAM",
}
# The paper's Table 5: localization, coherence, hallucination %, quality.
PAPER_TABLE5 = {
    "base": (3.25, 3.10, 18.5, 3.05),
    "hacl": (3.40, 3.25, 16.0, 3.20),
    "fgam": (4.10, 3.95, 8.0, 4.05),
}
HOSTILE = "A&B_50%#1 {x} \\evil ~^$ [1] | <script>alert('x')</script>\nnext"


def scores_with_mean(target: float, n_ratings: int) -> list[int]:
    """n_ratings integer scores whose mean is exactly target (floor everywhere, +1 on some)."""
    low = math.floor(target)
    ups = round((target - low) * n_ratings)
    return [low + 1] * ups + [low] * (n_ratings - ups)


def table5_rows(n_items: int = 200):
    """200 items x 3 systems x 3 raters whose statistics are the paper's Table 5."""
    rows = []
    for system, (loc, coh, halluc, qual) in PAPER_TABLE5.items():
        n = n_items * 3
        loc_scores = scores_with_mean(loc, n)
        coh_scores = scores_with_mean(coh, n)
        qual_scores = scores_with_mean(qual, n)
        hallucinated_items = round(halluc / 100 * n_items)
        for i in range(n_items):
            for r in range(3):
                k = i * 3 + r
                # Two of three raters mark the hallucinated items; a lone third-rater mark on
                # the next item must not count.
                marked = (i < hallucinated_items and r < 2) or (i == hallucinated_items and r == 2)
                rows.append(
                    row(
                        i,
                        system,
                        f"rater{(i + r) % 7}",
                        halluc=marked,
                        localization=loc_scores[k],
                        coherence=coh_scores[k],
                        quality=qual_scores[k],
                    )
                )
    return rows


@pytest.fixture(scope="module")
def paper_results():
    return compute_results(
        table5_rows(),
        systems=SYSTEMS,
        criteria=["localization", "coherence", "quality"],
        baseline="base",
        n_boot=400,
    )


def markdown_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    # Split on pipes that are not backslash-escaped.
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def test_table5_reproduces_the_papers_layout_and_figures(paper_results):
    table = tables.table5(paper_results, PAPER_NAMES, ci_style="none")
    assert [c.header for c in table.columns] == [
        "Method",
        "F-G Localization Acc. ↑ (1-5 Scale)",
        "Reasoning Coherence ↑ (1-5 Scale)",
        "Hallucination Rate ↓ (%)",
        "Overall Quality ↑ (1-5 Scale)",
    ]
    assert markdown_rows(table.to_markdown()) == [
        ["LLaVA-1.5-7B \\[11\\]", "3.25", "3.10", "18.5", "3.05"],
        ["LLaVA-1.5-7B + HACL \\[43\\]", "3.40", "3.25", "16.0", "3.20"],
        ["LLaVA-1.5-7B + FGAM", "**4.10**", "**3.95**", "**8.0**", "**4.05**"],
    ]


def test_table5_shows_intervals_that_contain_the_means(paper_results):
    table = tables.table5(paper_results, PAPER_NAMES)
    fgam = table.rows[2]
    assert fgam[1].text.startswith("4.10 [")
    for cell in fgam[1:]:
        assert cell.ci_low <= cell.value <= cell.ci_high
    assert any("percentile bootstrap interval over items (400 replicates" in n for n in table.notes)
    pm = tables.table5(paper_results, PAPER_NAMES, ci_style="pm")
    half = max(fgam[1].value - fgam[1].ci_low, fgam[1].ci_high - fgam[1].value)
    assert pm.rows[2][1].text == f"4.10 ± {half:.2f}"


def test_table5_csv_has_numbers_and_interval_columns(paper_results):
    parsed = list(csv.reader(io.StringIO(tables.table5(paper_results, PAPER_NAMES).to_csv())))
    header, rows = parsed[0], parsed[1:]
    assert header[:4] == [
        "Method",
        "F-G Localization Acc. ↑ (1-5 Scale)",
        "F-G Localization Acc. CI low",
        "F-G Localization Acc. CI high",
    ]
    assert rows[0][0] == "LLaVA-1.5-7B [11]"
    assert float(rows[0][1]) == pytest.approx(3.25)
    assert float(rows[0][2]) <= 3.25 <= float(rows[0][3])
    assert float(rows[2][header.index("Hallucination Rate ↓ (%)")]) == pytest.approx(8.0)


def test_table3_reproduces_the_papers_error_analysis():
    base = {"object": 25, "attribute": 30, "spatial": 20, "reasoning": 18}
    fgam = {"object": 8, "attribute": 12, "spatial": 6, "reasoning": 9}
    results = compute_results(
        table3_rows(base, fgam),
        systems=["base", "fgam"],
        criteria=["quality"],
        baseline="base",
        n_boot=200,
    )
    names = {"base": "LLaVA-1.5-7B", "fgam": "LLaVA-1.5-7B + FGAM"}
    table = tables.table3(results, names)
    assert [c.header for c in table.columns] == [
        "Error Type",
        "LLaVA-1.5-7B (Baseline) (%)",
        "LLaVA-1.5-7B + FGAM (%)",
        "Reduction (%)",  # as the preprint heads it
    ]
    assert markdown_rows(table.to_markdown()) == [
        ["Object Hallucination", "12.5", "4.0", "68.0"],
        ["Attribute Hallucination", "15.0", "6.0", "60.0"],
        ["Spatial Relation Hallucination", "10.0", "3.0", "70.0"],
        ["Reasoning Inconsistency", "9.0", "4.5", "50.0"],
        # The paper prints 62.1 by dividing its rounded 11.6 and 4.4; see test_stats.
        ["**Total Error Rate (Aggregated)**", "**11.6**", "**4.4**", "**62.4**"],
    ]
    assert "| LLaVA-1.5-7B + FGAM (%) | Reduction (%) |" in table.to_markdown()
    latex = table.to_latex()
    assert r"\midrule" + "\n" + r"\textbf{Total Error Rate (Aggregated)} & \textbf{11.6}" in latex


def test_table3_against_another_baseline_gives_point_reductions(paper_results):
    table = tables.table3(paper_results, PAPER_NAMES, baseline="hacl", ci_style="interval")
    assert table.columns[1].header == "LLaVA-1.5-7B + HACL [43] (Baseline) (%)"
    assert [c.header for c in table.columns[-2:]] == [
        "Reduction: LLaVA-1.5-7B [11] (%)",
        "Reduction: LLaVA-1.5-7B + FGAM (%)",
    ]
    with pytest.raises(ValueError, match="needs a baseline"):
        tables.table3(
            compute_results([], systems=["a", "b"], criteria=["quality"]), {}, baseline=None
        )


def test_missing_figures_render_as_a_dash_with_a_reason_never_nan():
    rows = [row(i, "a", r, quality=3) for i in range(3) for r in "xy"]
    results = compute_results(
        rows, systems=["a", "b"], criteria=["quality"], baseline="a", n_boot=50
    )
    for table in tables.all_tables(results, {"a": "Alpha", "b": "Beta"}):
        for fmt in ("csv", "md", "tex", "html"):
            text = table.render(fmt)
            assert not re.search(r"\bnan\b", text, re.IGNORECASE), (table.key, fmt)
    table5 = tables.table5(results, {"a": "Alpha", "b": "Beta"})
    assert table5.rows[1][1].text == tables.MISSING
    assert "—: no ratings." in table5.notes
    csv_rows = list(csv.reader(io.StringIO(table5.to_csv())))
    assert csv_rows[2][1:4] == ["", "", ""]
    html_text = table5.to_html()
    assert 'class="num missing">—</td>' in html_text
    assert "---" in table5.to_latex()


def test_agreement_table_reports_the_published_alpha():
    rows = [
        row(f"u{u}", "only", f"o{r}", quality=int(v))
        for r, ratings in enumerate(KRIPPENDORFF_2011)
        for u, v in enumerate(ratings)
        if not math.isnan(v)
    ]
    results = compute_results(rows, systems=["only"], criteria=["quality"], n_boot=20)
    table = tables.agreement_table(results)
    quality = table.rows[0]
    assert [c.text for c in quality[:6]] == [
        "Overall Quality",
        "ordinal",
        "0.815",
        f"{43 / 55 * 100:.1f}",
        "11",
        "55",
    ]
    halluc = next(r for r in table.rows if r[0].text == "Hallucination")
    assert halluc[2].text == tables.MISSING
    assert "same value" in halluc[6].text


def test_pairwise_table_formats_p_values_and_marks_significance(paper_results):
    table = tables.pairwise_table(paper_results, PAPER_NAMES)
    assert len(table.rows) == 3 * 3
    first = table.rows[0]
    assert [c.text for c in first[:3]] == [
        "F-G Localization Acc.",
        "LLaVA-1.5-7B [11]",
        "LLaVA-1.5-7B + HACL [43]",
    ]
    comparison = paper_results.pairwise["localization"][0]
    assert first[4].text == f"{comparison.mean_difference:+.2f}"
    assert first[7].value == comparison.p_holm
    base_vs_fgam = table.rows[1]
    assert base_vs_fgam[7].text == "<0.001"
    assert "significant at 0.05" in base_vs_fgam[9].text
    # Wherever the two differ, FGAM (B) is rated higher, so the effect is -1.
    assert base_vs_fgam[8].text == "-1.00"
    assert "&lt;0.001" in table.to_html()


def test_rater_bias_table_lists_each_rater_and_criterion(paper_results):
    table = tables.rater_bias_table(paper_results, {"rater0": "Ada"})
    assert len(table.rows) == 7 * 3
    assert table.rows[0][0].text == "Ada"
    expected = next(
        b for b in paper_results.rater_bias if b.rater == "rater0" and b.criterion == "localization"
    )
    assert table.rows[0][2].text == f"{expected.offset:+.2f}"


# --- escaping -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_table(paper_results):
    names = {**PAPER_NAMES, "hacl": HOSTILE, "fgam": '=HYPERLINK("http://evil","x")'}
    return tables.table5(paper_results, names)


def test_latex_escapes_special_characters(hostile_table):
    latex = hostile_table.to_latex()
    line = next(li for li in latex.splitlines() if "evil" in li and "HYPERLINK" not in li)
    expected = (
        r"A\&B\_50\%\#1 \{x\} \textbackslash{}evil \textasciitilde{}\textasciicircum{}\$ "
        r"{[}1{]} \textbar{} \textless{}script\textgreater{}alert('x')\textless{}/script"
        r"\textgreater{} next"
    )
    assert line.startswith(expected + " & ")
    # Exactly one unescaped & per column boundary: the name added none.
    assert len(re.findall(r"(?<!\\)&", line)) == len(hostile_table.columns) - 1
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"$\uparrow$" in latex


def test_html_escapes_names(hostile_table):
    text = hostile_table.to_html()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text


def test_markdown_escapes_names(hostile_table):
    text = hostile_table.to_markdown()
    assert "<script>" not in text
    hostile_row = next(r for r in markdown_rows(text) if "evil" in r[0])
    assert len(hostile_row) == len(hostile_table.columns)
    assert hostile_row[0].startswith(r"A&amp;B\_50%#1 {x} \\evil \~^$ \[1\] \| &lt;script&gt;")


def test_csv_round_trips_names_and_defuses_formulas(hostile_table):
    parsed = list(csv.reader(io.StringIO(hostile_table.to_csv())))
    assert all(len(r) == len(parsed[0]) for r in parsed)
    assert parsed[2][0] == HOSTILE.replace("\n", " ")
    assert parsed[3][0] == '\'=HYPERLINK("http://evil","x")'


def test_unknown_format_and_ci_style_are_rejected(paper_results):
    table = tables.table5(paper_results, PAPER_NAMES)
    with pytest.raises(ValueError, match="unknown table format 'pdf'"):
        table.render("pdf")
    with pytest.raises(ValueError, match="ci_style"):
        tables.table5(paper_results, PAPER_NAMES, ci_style="sideways")


def test_error_type_labels_are_configurable(paper_results):
    table = tables.table3(paper_results, PAPER_NAMES, labels={"object": "Objects & things"})
    assert table.rows[0][0].text == "Objects & things"
    assert [r[0].text for r in table.rows[1 : len(ERROR_TYPES)]] == [
        "Attribute Hallucination",
        "Spatial Relation Hallucination",
        "Reasoning Inconsistency",
    ]


def test_agreement_table_uses_configured_error_labels(paper_results):
    table = tables.agreement_table(paper_results, error_labels={"spatial": "Where <things> are"})
    labels = [r[0].text for r in table.rows]
    assert "Error type: Where <things> are" in labels
    assert "Error type: Object Hallucination" in labels
    assert "Where &lt;things&gt; are" in table.to_html()


def test_table5_says_how_many_items_and_ratings_it_rests_on(paper_results):
    notes = tables.table5(paper_results, PAPER_NAMES).notes
    assert "200 items per system, 1800 ratings by 7 raters." in notes
    partial = compute_results(
        [r for r in table5_rows() if not (r.system == "fgam" and int(r.item) >= 150)],
        systems=SYSTEMS,
        criteria=["localization", "coherence", "quality"],
        n_boot=20,
    )
    notes = tables.table5(partial, PAPER_NAMES).notes
    assert any("LLaVA-1.5-7B + FGAM: 150" in n for n in notes)
