"""A bar chart of a round's results as inline SVG: no JavaScript, no plotting library.

Left panel: one group of bars per Likert criterion (axis 1 to 5), one bar per system. Right panel:
the hallucination rate (%) per system. Every bar carries a whisker for its bootstrap interval and
a ``<title>`` with the exact figures (a tooltip); the chart is one ``role="img"`` whose
``<desc>`` lists every figure as text, so screen readers get all the numbers.
System names and labels are untrusted and escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

from webapp.evaluation.stats.bootstrap import Estimate
from webapp.evaluation.stats.ratings import LIKERT_MAX, LIKERT_MIN
from webapp.evaluation.stats.results import Results

# Okabe & Ito's colour-blind-safe palette (black last); cycles when there are more systems.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
LEGEND_NAME_CHARS = 40

_MARGIN_TOP = 56  # room for the legend
_MARGIN_BOTTOM = 48  # group labels
_AXIS_WIDTH = 44


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above value (axis top for percentages)."""
    if value <= 0:
        return 10.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10**exponent
        if top >= value - 1e-9:
            return min(top, 100.0) if value <= 100 else top
    return 100.0


def _describe(name: str, label: str, estimate: Estimate, unit: str, digits: int) -> str:
    if estimate.value is None:
        return f"{name}, {label}: no value ({estimate.reason or 'no ratings'})"
    text = f"{name}, {label}: {estimate.value:.{digits}f}{unit}"
    if estimate.ci_low is not None and estimate.ci_high is not None:
        text += f" (95% CI {estimate.ci_low:.{digits}f} to {estimate.ci_high:.{digits}f}{unit})"
    return text + f", n = {estimate.n} items"


class _Panel:
    """One plotting area: a value axis and groups of bars."""

    def __init__(self, x: float, width: float, top: float, height: float, lo: float, hi: float):
        self.x, self.width, self.top, self.height, self.lo, self.hi = x, width, top, height, lo, hi

    def y(self, value: float) -> float:
        clamped = min(max(value, self.lo), self.hi)
        return self.top + self.height * (1 - (clamped - self.lo) / (self.hi - self.lo))

    def axis(self, ticks: list[float], label: str, digits: int) -> list[str]:
        parts = []
        for tick in ticks:
            y = self.y(tick)
            parts.append(
                f'<line class="grid" x1="{self.x:.1f}" x2="{self.x + self.width:.1f}" '
                f'y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd" stroke-width="1"/>'
            )
            parts.append(
                f'<text x="{self.x - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" '
                f'font-size="11" fill="#444">{tick:.{digits}f}</text>'
            )
        mid = self.top + self.height / 2
        parts.append(
            f'<text x="{self.x - _AXIS_WIDTH + 12:.1f}" y="{mid:.1f}" font-size="11" fill="#444" '
            f'text-anchor="middle" transform="rotate(-90 {self.x - _AXIS_WIDTH + 12:.1f} '
            f'{mid:.1f})">{_esc(label)}</text>'
        )
        return parts

    def bar(
        self,
        x: float,
        width: float,
        estimate: Estimate,
        colour: str,
        description: str,
    ) -> list[str]:
        base_y = self.y(self.lo)
        parts = ['<g class="bar">']
        parts.append(f"<title>{_esc(description)}</title>")
        if estimate.value is None:
            parts.append(
                f'<text x="{x + width / 2:.1f}" y="{base_y - 4:.1f}" text-anchor="middle" '
                f'font-size="12" fill="#666">—</text>'
            )
        else:
            top = self.y(estimate.value)
            parts.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
                f'height="{max(base_y - top, 0):.1f}" fill="{colour}"/>'
            )
            if estimate.ci_low is not None and estimate.ci_high is not None:
                low, high = self.y(estimate.ci_low), self.y(estimate.ci_high)
                centre, cap = x + width / 2, min(width / 4, 6)
                parts.append(
                    f'<path class="ci" d="M{centre:.1f} {low:.1f}V{high:.1f}'
                    f"M{centre - cap:.1f} {low:.1f}H{centre + cap:.1f}"
                    f'M{centre - cap:.1f} {high:.1f}H{centre + cap:.1f}" '
                    'stroke="#222" stroke-width="1.5" fill="none"/>'
                )
        parts.append("</g>")
        return parts


def bar_chart_svg(
    results: Results,
    names: Mapping[str, str],
    *,
    width: int = 760,
    height: int = 340,
    title: str = "Mean ratings and hallucination rate per system, with 95% bootstrap CIs",
    id_prefix: str = "eval-chart",
) -> str:
    """An accessible inline SVG bar chart of the Likert means and hallucination rates."""
    systems = list(results.systems)
    system_names = [names.get(s, s) for s in systems]
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(systems)}
    # The legend wraps onto as many lines as the names need; the plot starts below it, and the
    # SVG grows by the same amount so the plotting area keeps its height.
    legend: list[str] = ['<g class="legend" aria-hidden="true">']
    x, y = 8.0, 20.0
    for i, system in enumerate(systems):
        shown = _short(system_names[i], LEGEND_NAME_CHARS)
        step = 24 + 7 * len(shown)
        if x + step > width and x > 8:
            x, y = 8.0, y + 18
        legend.append(
            f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colours[system]}"/>'
        )
        legend.append(
            f'<text x="{x + 16:.1f}" y="{y:.1f}" font-size="12" fill="#222">'
            f"<title>{_esc(system_names[i])}</title>{_esc(shown)}</text>"
        )
        x += step
    legend.append("</g>")
    extra = y - 20.0
    height = int(height + extra)
    plot_top = _MARGIN_TOP + extra
    plot_height = height - plot_top - _MARGIN_BOTTOM
    left_width = (width - 2 * _AXIS_WIDTH - 24) * 0.75
    right_x = _AXIS_WIDTH + left_width + 24 + _AXIS_WIDTH
    right_width = width - right_x - 8
    likert = _Panel(_AXIS_WIDTH, left_width, plot_top, plot_height, LIKERT_MIN, LIKERT_MAX)
    peak = max(
        [
            e.ci_high if e.ci_high is not None else e.value
            for e in results.hallucination.values()
            if e.value is not None
        ]
        or [0.0]
    )
    rates = _Panel(right_x, right_width, plot_top, plot_height, 0.0, _nice_ceiling(peak))

    title_id, desc_id = f"{id_prefix}-title", f"{id_prefix}-desc"
    descriptions: list[str] = []
    body: list[str] = []
    body += likert.axis([float(v) for v in range(LIKERT_MIN, LIKERT_MAX + 1)], "Mean (1-5)", 0)
    rate_ticks = [rates.hi * f for f in (0, 0.25, 0.5, 0.75, 1)]
    whole = all(float(t).is_integer() for t in rate_ticks)
    body += rates.axis(rate_ticks, "Hallucination (%)", 0 if whole else 1)

    n = max(len(systems), 1)

    def group(panel: _Panel, x0: float, group_width: float, label: str, key: str | None) -> None:
        bar_width = group_width * 0.8 / n
        body.append('<g class="group">')
        for i, system in enumerate(systems):
            if key is None:
                estimate, unit, digits = results.hallucination[system], "%", 1
            else:
                estimate, unit, digits = results.likert[system][key], "", 2
            description = _describe(system_names[i], label, estimate, unit, digits)
            descriptions.append(description)
            x = x0 + group_width * 0.1 + i * bar_width
            body.extend(panel.bar(x, bar_width * 0.9, estimate, colours[system], description))
        body.append("</g>")
        body.append(
            f'<text x="{x0 + group_width / 2:.1f}" y="{plot_top + plot_height + 18:.1f}" '
            f'text-anchor="middle" font-size="12" fill="#222">{_esc(_short(label, 28))}</text>'
        )

    criteria = list(results.criteria)
    group_width = left_width / max(len(criteria), 1)
    for j, criterion in enumerate(criteria):
        group(likert, likert.x + j * group_width, group_width, results.label(criterion), criterion)
    group(rates, rates.x, rates.width, "Hallucination rate", None)

    if not systems:
        descriptions.append("No systems.")
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="eval-chart" id="{_esc(id_prefix)}" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{_esc(title_id)} {_esc(desc_id)}" '
        'font-family="system-ui, sans-serif">',
        f'<title id="{_esc(title_id)}">{_esc(title)}</title>',
        f'<desc id="{_esc(desc_id)}">{_esc("; ".join(descriptions))}.</desc>',
    ]
    return "\n".join([*head, *legend, *body, "</svg>"]) + "\n"
