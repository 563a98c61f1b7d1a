"""The statistics of a round: its ratings as ``RatingRow`` values, the results of
``compute_results`` (live while open, frozen into the round when it closes) and the
tables and chart rendered from them.

System identity enters here only as the opaque system key; the display names map onto keys at
the last moment, for curators.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from django.core.cache import cache
from django.db.models import Count, Max

from webapp.evaluation.models import Rating, Round
from webapp.evaluation.stats.ratings import RatingRow
from webapp.evaluation.stats.results import Results, compute_results

DEFAULT_BOOTSTRAP = 2000
# Live results are cached under a fingerprint of the ratings (count and last change), so a
# page polling every few seconds recomputes only after a rating was saved.
CACHE_SECONDS = 3600

TABLES = {
    "table5": "Table 5: Likert means and hallucination rate",
    "table3": "Table 3: error types and reduction against the baseline",
    "pairwise": "Pairwise Wilcoxon signed-rank tests (Holm-corrected)",
    "agreement": "Inter-rater agreement",
    "rater_bias": "Per-rater bias",
}
FORMATS = {
    "csv": ("text/csv", "to_csv"),
    "md": ("text/markdown", "to_markdown"),
    "tex": ("application/x-tex", "to_latex"),
}


def rating_rows(round_: Round) -> Iterator[RatingRow]:
    """Every saved rating of the round, keyed by item id, system key and rater username
    (the results are curator-only, and a name reads better than an id in the bias table)."""
    rows = (
        Rating.objects.filter(assignment__round=round_)
        .order_by("pk")
        .values_list(
            "assignment__item_id",
            "response__system__key",
            "assignment__rater__username",
            "scores",
            "hallucination",
            "error_types",
        )
        .iterator(chunk_size=5000)
    )
    for item, system, rater, scores, hallucination, error_types in rows:
        yield RatingRow(
            item=str(item), system=system, rater=str(rater), scores=scores,
            hallucination=hallucination, error_types=frozenset(error_types),
        )  # fmt: skip


def system_names(round_: Round) -> dict[str, str]:
    """System key -> display name, in the order systems were added (the tables' row order)."""
    return dict(round_.systems.order_by("pk").values_list("key", "name"))


def compute(round_: Round, *, n_boot: int = DEFAULT_BOOTSTRAP) -> Results:
    """Fresh statistics from the round's ratings."""
    names = system_names(round_)
    baseline = round_.baseline.key if round_.baseline_id else None
    return compute_results(
        rating_rows(round_),
        systems=list(names),
        criteria={c["key"]: c["label"] for c in round_.criteria["likert"]},
        baseline=baseline,
        n_boot=n_boot,
        seed=round_.seed,
        error_types=round_.error_type_keys,
    )


def _fingerprint(round_: Round) -> str:
    state = Rating.objects.filter(assignment__round=round_).aggregate(
        n=Count("pk"), last=Max("updated_at")
    )
    baseline = round_.baseline.key if round_.baseline_id else ""
    raw = f"{round_.pk}:{state['n']}:{state['last']}:{baseline}:{sorted(system_names(round_))}"
    return "fgam-eval-results:" + hashlib.sha256(raw.encode()).hexdigest()


def results_for(round_: Round) -> Results:
    """Frozen results of a closed round, else live ones (cached until a rating changes)."""
    if round_.status == Round.Status.CLOSED and round_.results:
        return Results.from_dict(round_.results)
    key = _fingerprint(round_)
    data = cache.get(key)
    if data is not None:
        return Results.from_dict(data)
    results = compute(round_)
    cache.set(key, results.as_dict(), CACHE_SECONDS)
    return results


def freeze(round_: Round) -> None:
    """Store the final statistics in the closed round."""
    round_.results = compute(round_).as_dict()
    round_.save(update_fields=["results"])


def table(results: Results, names: dict[str, str], name: str, baseline: str | None):
    """One of ``TABLES`` as a ``table_render.Table``."""
    from webapp.evaluation import tables

    if name == "table5":
        return tables.table5(results, names)
    if name == "table3":
        return tables.table3(results, names, baseline)
    if name == "pairwise":
        return tables.pairwise_table(results, names)
    if name == "agreement":
        return tables.agreement_table(results)
    if name == "rater_bias":
        return tables.rater_bias_table(results)
    raise KeyError(name)


def chart(results: Results, names: dict[str, str]) -> str:
    """The SVG bar chart (means with CIs per criterion and system)."""
    from webapp.evaluation import charts

    return charts.bar_chart_svg(results, names)
