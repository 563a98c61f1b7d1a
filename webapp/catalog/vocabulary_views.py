"""The dataset's vocabulary page: names with their region and image counts, and the aliases.

The counts run over every accepted region of the dataset (``vocabulary.vocabulary_counts``),
so the image grid does not compute them on each load: it fetches the top of the table with
htmx after the page has shown (``?top=``), with a plain link to this page beside it.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog import vocabulary
from webapp.catalog.models import Dataset, VocabularyAlias
from webapp.core.http import HtmxRequest, vary_on_htmx, wants_fragment
from webapp.core.policy import READ, WRITE, allow, is_curator, scope

TEMPLATE = "catalog/vocabulary.html"
# The most names the grid's summary shows.
TOP_MAX = 50


def _dataset(request: HtmxRequest, name: str) -> Dataset:
    return get_object_or_404(scope(Dataset.objects.all(), request.user, ""), name=name)


def vocabulary_context(request: HtmxRequest, dataset: Dataset, top: int | None) -> dict:
    rows = vocabulary.vocabulary_counts(dataset)
    return {
        "dataset": dataset,
        "rows": rows[:top] if top else rows,
        "name_count": len(rows),
        "region_total": sum(n for _, n, _ in rows),
        "truncated": bool(top and len(rows) > top),
        # Shown inside the image grid: link to the whole page.
        "summary": bool(top),
        "aliases": list(VocabularyAlias.objects.filter(dataset=dataset)),
        "can_edit": is_curator(request.user),
    }


@allow("datasets", READ)
@require_GET
@vary_on_htmx
def vocabulary_page(request: HtmxRequest, name: str) -> HttpResponse:
    """Every vocabulary name of the dataset's accepted regions, most frequent first."""
    dataset = _dataset(request, name)
    top = request.GET.get("top", "")
    limit = min(int(top), TOP_MAX) if top.isdigit() and int(top) > 0 else None
    context = vocabulary_context(request, dataset, limit)
    template = f"{TEMPLATE}#vocabulary" if wants_fragment(request) else TEMPLATE
    return render(request, template, context)


@allow("datasets", WRITE)
@require_POST
def aliases(request: HtmxRequest, name: str) -> HttpResponse:
    """Add an alias (``phrase`` -> ``name``) or remove one (``remove=<phrase>``); the page
    counts again when it reloads."""
    dataset = _dataset(request, name)
    removed = request.POST.get("remove")
    if removed is not None:
        if vocabulary.remove_alias(dataset=dataset, phrase=removed):
            messages.success(request, f"Alias of {removed!r} removed.")
        else:
            messages.error(request, f"{removed!r} had no alias.")
    else:
        try:
            alias = vocabulary.set_alias(
                dataset=dataset,
                phrase=request.POST.get("phrase", "")[:255],
                name=request.POST.get("name", "")[:255],
                user=request.user,
            )
        except vocabulary.AliasRefused as error:
            messages.error(request, f"Alias not added: {error}")
        else:
            messages.success(request, f"Alias saved: {alias.phrase} → {alias.name}.")
    return HttpResponseRedirect(reverse("catalog:vocabulary", args=[dataset.name]))
