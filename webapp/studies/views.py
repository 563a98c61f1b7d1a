"""Studies in the browser.

- ``/studies/``: the studies, newest first, and (curators) the form that creates one from
  presets or a pasted ``study.json``, posted to ``/studies/create/``;
- ``/studies/<id>/``: the arms x stages grid (an htmx partial polling every 2 s while the study
  runs), then Table 2 and Figures 1-2 filled as scores arrive, each number linked to its
  lineage; start and retry buttons for curators;
- ``/studies/<id>/table2.<csv|md|tex>``: the table as a file, rendered like Tables 3 and 5.

A study is visible to whoever may see its dataset version (``scope_versions``).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from training.studies.presets import PRESETS
from webapp.core.demo_models import resolve_model
from webapp.core.http import HtmxRequest, vary_on_htmx, wants_fragment
from webapp.core.policy import READ, WRITE, allow, allows, scope_versions
from webapp.exports.models import DatasetVersion
from webapp.probes.models import ProbeSet
from webapp.studies.charts import bar_chart
from webapp.studies.models import Study
from webapp.studies.results import FORMATS, collect, figure_groups, table2
from webapp.studies.services import StudyServiceError, create_study, retry_study, start_study


def _versions(request: HttpRequest) -> QuerySet[DatasetVersion]:
    return scope_versions(DatasetVersion.objects.all(), request.user)


def _studies(request: HttpRequest) -> QuerySet[Study]:
    return Study.objects.filter(version__in=_versions(request)).select_related("version")


@allow("studies", READ)
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    return render(request, "studies/list.html", _list_context(request))


def _list_context(request: HttpRequest, **extra) -> dict:
    return {
        "studies": _studies(request)[:100],
        "can_create": allows(request.user, "studies", WRITE),
        "versions": _versions(request).filter(status=DatasetVersion.Status.READY).order_by("-id"),
        "probe_sets": ProbeSet.objects.filter(status=ProbeSet.Status.READY).order_by("-id"),
        "presets": list(PRESETS),
        "form": {"presets": ["table2"]},
        **extra,
    }


@allow("studies", WRITE)
@require_POST
def study_create(request: HttpRequest) -> HttpResponse:
    data = request.POST
    version = _versions(request).filter(pk=data.get("version") or 0).first()
    try:
        if data.get("study_json", "").strip():
            spec = json.loads(data["study_json"])
        else:
            spec = {
                "name": data.get("name", "").strip(),
                "version": str(version.pk) if version else "",
                "model": resolve_model(data.get("model", "")),
                "rm": resolve_model(data.get("rm", "")),
                "arms": data.getlist("presets") or "table2",
                "probe_sets": data.getlist("probe_sets"),
            }
            if data.get("clip", "").strip():
                spec["clip"] = resolve_model(data["clip"])
            if data.get("settings", "").strip():
                spec["settings"] = json.loads(data["settings"])
        study = create_study(spec=spec, version=version, created_by=request.user)
    except (StudyServiceError, ValueError) as err:
        context = _list_context(request, error=str(err), form={**data, "presets": data.getlist(
            "presets")})  # fmt: skip
        return render(request, "studies/list.html", context, status=422)
    messages.success(request, f"Study {study.name} created with {study.steps.count()} steps.")
    return HttpResponseRedirect(reverse("studies:detail", args=[study.pk]))


@allow("studies", READ)
@require_GET
@vary_on_htmx
def study_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(_studies(request), pk=pk)
    results = collect(study)
    table = table2(results)
    figures = [
        (name, mark_safe(bar_chart(results, arms, title=f"{name}: POPE F1 by arm")))
        for name, arms in figure_groups(results)
    ]
    rows = []
    for arm in results.arms:
        cells = results.grid[arm]
        rows.append(
            {
                "arm": arm,
                "stage1": cells["stage1"],
                "stage2": cells["stage2"],
                "bench": [cells["bench"].get(p.pk) for p in results.probe_sets],
                "scores": [results.score(arm, p.pk) for p in results.probe_sets],
                "failed": any(s.status == "failed" for s in results.steps if arm in s.arms),
            }
        )
    context = {
        "study": study,
        "results": results,
        "rows": rows,
        "table": table,
        "figures": figures,
        "formats": list(FORMATS),
        "can_write": allows(request.user, "studies", WRITE),
        "spec_json": json.dumps(study.spec, indent=2),
    }
    template = "studies/detail.html" + ("#progress" if wants_fragment(request) else "")
    return render(request, template, context)


@allow("studies", WRITE)
@require_POST
def study_start(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(_studies(request), pk=pk)
    try:
        start_study(study=study)
        messages.success(request, f"Study {study.name} started.")
    except StudyServiceError as err:
        messages.error(request, str(err))
    return HttpResponseRedirect(reverse("studies:detail", args=[pk]))


@allow("studies", WRITE)
@require_POST
def study_retry(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(_studies(request), pk=pk)
    try:
        steps = retry_study(study=study, arm=request.POST.get("arm", ""))
        messages.success(request, f"Retrying {len(steps)} step(s).")
    except StudyServiceError as err:
        messages.error(request, str(err))
    return HttpResponseRedirect(reverse("studies:detail", args=[pk]))


@allow("studies", READ)
@require_GET
def study_table(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    if fmt not in FORMATS:
        raise Http404("unknown format")
    study = get_object_or_404(_studies(request), pk=pk)
    table = table2(collect(study))
    response = HttpResponse(table.render(fmt), content_type=f"{FORMATS[fmt]}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{study.name}-table2.{fmt}"'
    return response
