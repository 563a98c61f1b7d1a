"""Evaluation-results benchmark: compute_results and every table for a round of synthetic ratings.

    .venv/bin/python -m tests.bench.bench_eval_results [--items 200 10000] [--repeats 3]
        [--n-boot 2000] [--raters-pool 30]

For each size: N items x 3 systems x 3 raters (drawn per item from a pool of raters), seeded
synthetic Likert scores for the three default criteria, hallucination marks and error-type tags.
Times (best and median of ``--repeats`` runs, seconds):

* ``compute_results``: validation and encoding of the rows, bootstrap CIs (``--n-boot``
  replicates over items), Wilcoxon + Holm, Krippendorff's alpha, rater bias;
* ``render``: all tables in all four formats (CSV, Markdown, LaTeX, HTML) plus the SVG chart.

Building the RatingRow objects is not timed (the web app builds them from its query). Prints one
JSON object. Pure CPU, no database. Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from training.formats import ERROR_TYPES
from webapp.evaluation import charts, tables
from webapp.evaluation.stats.ratings import DEFAULT_CRITERIA, RatingRow
from webapp.evaluation.stats.results import compute_results

SYSTEMS = ("base", "hacl", "fgam")
NAMES = {"base": "LLaVA-1.5-7B", "hacl": "LLaVA-1.5-7B + HACL", "fgam": "LLaVA-1.5-7B + FGAM"}
QUALITY = {"base": 3.2, "hacl": 3.4, "fgam": 4.1}
HALLUCINATION = {"base": 0.185, "hacl": 0.16, "fgam": 0.08}
ERROR_RATE = {"base": 0.12, "hacl": 0.10, "fgam": 0.045}


def synthetic_rows(n_items: int, *, raters_pool: int, seed: int = 0) -> list[RatingRow]:
    """n_items x 3 systems x 3 raters, each rater with a small personal bias."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0, 0.3, size=raters_pool)
    rows = []
    for item in range(n_items):
        difficulty = rng.normal(0, 0.5)
        raters = rng.choice(raters_pool, 3, replace=False)
        for system in SYSTEMS:
            for rater in raters:
                noise = rng.normal(0, 0.7, size=len(DEFAULT_CRITERIA))
                raw = QUALITY[system] + difficulty + bias[rater] + noise
                scores = {
                    c: int(np.clip(np.rint(v), 1, 5))
                    for c, v in zip(DEFAULT_CRITERIA, raw, strict=True)
                }
                rows.append(
                    RatingRow(
                        item=f"item-{item}",
                        system=system,
                        rater=f"rater-{rater}",
                        scores=scores,
                        hallucination=bool(rng.random() < HALLUCINATION[system] * 1.5),
                        error_types=frozenset(
                            t for t in ERROR_TYPES if rng.random() < ERROR_RATE[system] * 1.5
                        ),
                    )
                )
    return rows


def render_everything(results) -> int:
    size = 0
    for table in tables.all_tables(results, NAMES):
        for fmt in ("csv", "md", "tex", "html"):
            size += len(table.render(fmt))
    size += len(charts.bar_chart_svg(results, NAMES))
    return size


def measure(n_items: int, *, repeats: int, n_boot: int, raters_pool: int) -> dict:
    rows = synthetic_rows(n_items, raters_pool=raters_pool)
    compute_times, render_times = [], []
    results = None
    for _ in range(repeats):
        start = time.perf_counter()
        results = compute_results(
            rows, systems=SYSTEMS, criteria=DEFAULT_CRITERIA, baseline="base", n_boot=n_boot
        )
        compute_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        render_everything(results)
        render_times.append(time.perf_counter() - start)
    assert results is not None
    fgam = results.likert["fgam"]["quality"]
    return {
        "items": n_items,
        "ratings": len(rows),
        "n_boot": n_boot,
        "compute_s": {
            "best": round(min(compute_times), 3),
            "median": round(statistics.median(compute_times), 3),
        },
        "render_all_tables_s": {
            "best": round(min(render_times), 4),
            "median": round(statistics.median(render_times), 4),
        },
        "sanity": {
            "fgam_quality": [
                round(fgam.value or 0, 3),
                round(fgam.ci_low or 0, 3),
                round(fgam.ci_high or 0, 3),
            ],
            "quality_alpha": next(
                (
                    round(a.alpha, 3)
                    for a in results.agreement
                    if a.measure == "quality" and a.alpha is not None
                ),
                None,
            ),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[200, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--raters-pool", type=int, default=30)
    args = parser.parse_args(argv)
    report = {
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "runs": [
            measure(n, repeats=args.repeats, n_boot=args.n_boot, raters_pool=args.raters_pool)
            for n in args.items
        ],
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
