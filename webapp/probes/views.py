"""Probe sets in the browser: the list with the curator's "Build a probe set" form, and a
detail page with the counts, the manifest's decisions and a sample of the probes.

The form is a plain POST (the page works without JavaScript); the build runs in the
``fgam.default.build_probes`` task, and the list polls with htmx while a set is building.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from training.probes.layout import ProbeSet as ProbeFolder
from training.probes.layout import ProbeSetError
from webapp.catalog.models import Dataset
from webapp.core.http import vary_on_htmx
from webapp.core.policy import READ, WRITE, allow, allows, scope_versions
from webapp.probes.building import ProbeBuildError, start_probe_set
from webapp.probes.models import ProbeSet

PAGE_SIZE = 50
SAMPLE = 20


def _probe_sets(request: HttpRequest):
    """Probe sets of datasets this user may open (the same rule as for versions)."""
    return scope_versions(ProbeSet.objects.all(), request.user)


@allow("probe-sets", READ)
@require_GET
@vary_on_htmx
def probe_set_list(request: HttpRequest) -> HttpResponse:
    """Probe sets, newest first; curators also see the ones building or failed."""
    curator = allows(request.user, "probe-sets", WRITE)
    probe_sets = _probe_sets(request).prefetch_related("datasets").defer("manifest")
    if not curator:
        probe_sets = probe_sets.filter(status=ProbeSet.Status.READY)
    page = list(probe_sets.order_by("-pk")[:PAGE_SIZE])
    return render(
        request,
        "probes/probe_set_list.html",
        {
            "probe_sets": page,
            "any_building": any(p.status == ProbeSet.Status.BUILDING for p in page),
            "can_build": curator,
            "datasets": Dataset.objects.order_by("name") if curator else [],
            "kinds": ProbeSet.Kind.choices,
        },
    )


@allow("probe-sets", WRITE)
@require_POST
def probe_set_build(request: HttpRequest) -> HttpResponse:
    try:
        probe_set = start_probe_set(
            datasets=request.POST.getlist("datasets"),
            kind=request.POST.get("kind", "pope"),
            split=request.POST.get("split") or None,
            images=int(request.POST.get("images") or 500),
            per_image=int(request.POST.get("per_image") or 3),
            seed=int(request.POST.get("seed") or 0),
            allow_seen=request.POST.get("allow_seen") == "on",
            reference=request.POST.get("reference") == "on",
            created_by=request.user,
        )
    except (ProbeBuildError, ValueError) as exc:
        messages.error(request, f"Cannot build the probe set: {exc}")
        return HttpResponseRedirect(reverse("probes:list"))
    messages.success(request, f"Probe set {probe_set.set_id} is being built.")
    return HttpResponseRedirect(reverse("probes:detail", args=[probe_set.pk]))


@allow("probe-sets", READ)
@require_GET
def probe_set_detail(request: HttpRequest, pk: int) -> HttpResponse:
    probe_set = get_object_or_404(_probe_sets(request).prefetch_related("datasets"), pk=pk)
    sample, problem = [], ""
    if probe_set.is_ready and probe_set.path:
        try:
            folder = ProbeFolder.open(Path(probe_set.path))
            sample = list(islice(folder.probes(), SAMPLE))
        except (ProbeSetError, OSError) as exc:
            problem = str(exc)
    manifest = {k: v for k, v in probe_set.manifest.items() if k != "image_sha256s"}
    return render(
        request,
        "probes/probe_set_detail.html",
        {
            "probe_set": probe_set,
            "sample": sample,
            "problem": problem,
            "by_split": sorted((probe_set.counts.get("by_split") or {}).items()),
            "manifest_json": json.dumps(manifest, indent=2, sort_keys=True),
            "can_benchmark": allows(request.user, "benchmarks", WRITE),
        },
    )
