"""Figures 1 and 2 as inline SVG bar charts: one group per probe set, one bar per arm, F1 on a
0-1 axis with a whisker for the bootstrap interval and the paired mark above the bar.

No JavaScript and no plotting library, like ``webapp.evaluation.charts``; every bar has a
``<title>`` with its exact figures and the chart's ``<desc>`` lists them all as text. Arm and
probe-set names are escaped.
"""

from __future__ import annotations

import html

from webapp.evaluation.charts import PALETTE
from webapp.studies.results import StudyResults

WIDTH = 640
HEIGHT = 280
TOP, BOTTOM, LEFT, RIGHT = 40, 44, 44, 12


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(results: StudyResults, arms: list[str], *, title: str) -> str:
    sets = results.probe_sets
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / max(len(sets), 1)
    bar_w = min(40.0, group_w * 0.8 / max(len(arms), 1))

    def y(value: float) -> float:
        return TOP + plot_h * (1 - max(0.0, min(1.0, value)))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'role="img" class="study-chart" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
    ]
    described = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 4}" y="{y(tick) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{tick:g}</text>'
        )
    for n, arm in enumerate(arms):
        colour = PALETTE[n % len(PALETTE)]
        parts.append(
            f'<rect x="{LEFT + n * 110}" y="8" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + n * 110 + 14}" y="17" font-size="11">{_esc(arm[:14])}</text>'
        )
    for g, probe_set in enumerate(sets):
        x0 = LEFT + g * group_w + (group_w - bar_w * len(arms)) / 2
        parts.append(
            f'<text x="{LEFT + g * group_w + group_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'font-size="11" text-anchor="middle">{_esc(probe_set.set_id)}</text>'
        )
        for n, arm in enumerate(arms):
            score = results.score(arm, probe_set.pk)
            if score is None or score.f1 is None:
                continue
            x = x0 + n * bar_w
            tip = f"{arm} on {probe_set.set_id}: F1 {score.f1:.4f}"
            if score.ci:
                tip += f" [{score.ci[0]:.4f}, {score.ci[1]:.4f}]"
            if score.delta is not None:
                tip += f", Δ {score.delta:+.4f}"
            if score.p_value is not None:
                tip += f", McNemar p {score.p_value:.4g}"
            described.append(tip)
            parts.append(
                f'<rect x="{x:.1f}" y="{y(score.f1):.1f}" width="{bar_w - 2:.1f}" '
                f'height="{TOP + plot_h - y(score.f1):.1f}" fill="{PALETTE[n % len(PALETTE)]}" '
                f'data-arm="{_esc(arm)}" data-f1="{score.f1!r}"><title>{_esc(tip)}</title></rect>'
            )
            mid = x + (bar_w - 2) / 2
            if score.ci:
                low, high = y(score.ci[0]), y(score.ci[1])
                parts.append(
                    f'<path d="M{mid:.1f} {low:.1f}V{high:.1f}M{mid - 4:.1f} {low:.1f}h8'
                    f'M{mid - 4:.1f} {high:.1f}h8" stroke="#222" class="ci"/>'
                )
            if score.mark:
                top = y(score.ci[1] if score.ci else score.f1) - 4
                parts.append(
                    f'<text x="{mid:.1f}" y="{top:.1f}" font-size="12" text-anchor="middle" '
                    f'class="mark">{score.mark}</text>'
                )
    parts.insert(2, f"<desc>{_esc('; '.join(described) or 'no scores yet')}</desc>")
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10">POPE F1 with 95% bootstrap CI; '
        f"* p&lt;0.05, ** p&lt;0.01 vs {_esc(results.base_arm)} (McNemar)</text></svg>"
    )
    return "\n".join(parts)
