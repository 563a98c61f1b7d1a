"""The SVG bar chart: well-formed, accessible, escaped, and drawn to scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.evaluation.test_tables import HOSTILE, PAPER_NAMES, table5_rows
from webapp.evaluation import charts
from webapp.evaluation.stats.results import compute_results

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def results():
    return compute_results(
        table5_rows(),
        systems=["base", "hacl", "fgam"],
        criteria=["localization", "coherence", "quality"],
        n_boot=300,
    )


def bars(root):
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "bar"]


def test_the_chart_is_well_formed_and_labelled(results):
    svg = charts.bar_chart_svg(results, PAPER_NAMES)
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"{SVG}title").get("id") == title_id
    desc = root.find(f"{SVG}desc")
    assert desc.get("id") == desc_id
    # The description carries every figure: 3 systems x (3 criteria + hallucination).
    assert "LLaVA-1.5-7B + FGAM, F-G Localization Acc.: 4.10" in desc.text
    assert "LLaVA-1.5-7B [11], Hallucination rate: 18.5%" in desc.text
    assert len(bars(root)) == 12


def test_bars_are_drawn_to_scale_with_interval_whiskers(results):
    root = ET.fromstring(charts.bar_chart_svg(results, PAPER_NAMES, height=340))
    likert_bars = bars(root)[:9]  # criteria groups come first, systems in order within each
    heights = [float(g.find(f"{SVG}rect").get("height")) for g in likert_bars]
    # Bars start at 1 on a 1..5 axis, so height is proportional to (mean - 1).
    localization = [heights[0], heights[1], heights[2]]
    assert localization[2] / localization[0] == pytest.approx((4.10 - 1) / (3.25 - 1), rel=1e-2)
    for g in likert_bars:
        assert g.find(f"{SVG}path").get("class") == "ci"
        assert "95% CI" in g.find(f"{SVG}title").text


def test_names_are_escaped(results):
    names = {**PAPER_NAMES, "hacl": HOSTILE}
    svg = charts.bar_chart_svg(results, names)
    assert "<script>" not in svg
    root = ET.fromstring(svg)  # would fail on an unescaped name
    legend_titles = [t.text for t in root.iter(f"{SVG}title") if t.text == HOSTILE]
    assert legend_titles, "the full hostile name is kept (escaped) in the legend tooltip"


def test_missing_values_draw_a_dash_instead_of_a_bar():
    from tests.evaluation.test_stats import row

    rows = [row(i, "a", r, quality=4) for i in range(3) for r in "xy"]
    results = compute_results(rows, systems=["a", "b"], criteria=["quality"], n_boot=20)
    root = ET.fromstring(charts.bar_chart_svg(results, {"a": "A", "b": "B"}))
    b_bar = bars(root)[1]
    assert b_bar.find(f"{SVG}rect") is None
    assert b_bar.find(f"{SVG}text").text == "—"
    assert "no value (no ratings)" in b_bar.find(f"{SVG}title").text


def test_the_rate_axis_grows_with_the_largest_interval():
    assert charts._nice_ceiling(18.7) == 20
    assert charts._nice_ceiling(3.2) == 5
    assert charts._nice_ceiling(0) == 10
    assert charts._nice_ceiling(99) == 100


def height(root) -> float:
    return float(root.get("viewBox").split()[3])


def first_bar_height(root) -> float:
    return float(bars(root)[0].find(f"{SVG}rect").get("height"))


def test_a_long_legend_wraps_and_pushes_the_plot_down(results):
    short = ET.fromstring(charts.bar_chart_svg(results, PAPER_NAMES))
    long_names = {k: v + " with a very long suffix that needs room" for k, v in PAPER_NAMES.items()}
    wrapped = ET.fromstring(charts.bar_chart_svg(results, long_names))
    assert height(wrapped) > height(short)
    legend_rows = {
        r.get("y")
        for g in wrapped.iter(f"{SVG}g")
        if g.get("class") == "legend"
        for r in g.iter(f"{SVG}rect")
    }
    assert len(legend_rows) >= 2
    # Bars keep the same drawing height: the plot moved, it did not shrink.
    assert first_bar_height(wrapped) == pytest.approx(first_bar_height(short))
