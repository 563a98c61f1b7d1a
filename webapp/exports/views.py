"""Dataset versions and training jobs in the browser.

Version list and detail (counts, size, hash, filters, lineage, the jobs that used it), the
curator's "Cut a version" form, a training job page whose metrics block is an htmx partial
(``exports/job_detail.html#metrics``) that polls while the job is open, and the webhook
delivery log. Every form is a plain POST, so the pages work without JavaScript.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog.models import Dataset
from webapp.core.http import HtmxRequest, vary_on_htmx, wants_fragment
from webapp.core.roles import CURATOR, has_role
from webapp.exports.models import DatasetVersion, TrainingJob, WebhookDelivery
from webapp.exports.selection import ExportError
from webapp.exports.services import cut_version
from webapp.exports.training_jobs import (
    TrainingJobError,
    ablation_presets,
    cancel_training_job,
    default_config,
    loss_series,
    start_training_job,
)

PAGE_SIZE = 50
CHART_W, CHART_H = 640, 220
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def _curator(request: HttpRequest) -> None:
    if not has_role(request.user, CURATOR):
        raise PermissionDenied("This needs the curator role.")


@require_GET
@vary_on_htmx
def version_list(request: HttpRequest) -> HttpResponse:
    """Ready versions, newest first; curators also see the ones being cut or failed."""
    versions = DatasetVersion.objects.prefetch_related("datasets").defer("manifest")
    curator = has_role(request.user, CURATOR)
    if not curator:
        versions = versions.filter(status=DatasetVersion.Status.READY)
    page = list(versions.order_by("-pk")[:PAGE_SIZE])
    return render(
        request,
        "exports/version_list.html",
        {
            "versions": page,
            "any_open": any(v.is_open for v in page),
            "can_cut": curator,
            "datasets": Dataset.objects.order_by("name") if curator else [],
        },
    )


@require_GET
@vary_on_htmx
def version_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    """The version page; for htmx polls, only its progress block while it is being cut."""
    version = get_object_or_404(
        DatasetVersion.objects.prefetch_related("datasets", "derived_from", "derivatives"), pk=pk
    )
    if not version.is_ready and not has_role(request.user, CURATOR):
        raise Http404("not ready")
    fragment = wants_fragment(request)
    if fragment and request.htmx.target == "version-progress":
        if version.is_open:
            return render(request, "exports/version_detail.html#progress", {"version": version})
        # Done (or failed): the counts, hash and job form change too, so reload the page.
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    can_train = has_role(request.user, CURATOR) and version.is_ready
    kind = request.GET.get("kind") or TrainingJob.Kind.STAGE1
    if kind not in TrainingJob.Kind.values:
        kind = TrainingJob.Kind.STAGE1
    template = "exports/version_detail.html"
    if fragment and request.htmx.target == "job-config":
        template += "#job_config"  # the kind changed: its defaults
    return render(
        request,
        template,
        {
            "version": version,
            "jobs": version.jobs.order_by("-pk"),
            "can_train": can_train,
            "kinds": TrainingJob.Kind.choices,
            "kind": kind,
            "default_config": json.dumps(default_config(kind), indent=2),
            "ablation_presets": ablation_presets() if can_train else {},
            "filters_json": json.dumps(version.filters, indent=2, sort_keys=True),
        },
    )


@require_POST
def version_cut(request: HttpRequest) -> HttpResponse:
    _curator(request)
    filters = {
        "status": request.POST.get("status", "accepted"),
        "origins": request.POST.getlist("origins"),
        "exclude_flagged": request.POST.get("include_flagged") != "on",
        "approved_trajectories_only": request.POST.get("unapproved_trajectories") != "on",
        "holdout_fraction": request.POST.get("holdout_fraction") or 0.0,
    }
    if request.POST.get("min_score"):
        filters["min_score"] = request.POST["min_score"]
    train = {"kind": "stage1"} if request.POST.get("train_on_ready") == "on" else {}
    try:
        version = cut_version(
            datasets=request.POST.getlist("datasets"),
            filters=filters,
            reference=request.POST.get("reference") == "on",
            train_on_ready=train,
            created_by=request.user,
        )
    except ExportError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("exports:version_list"))
    messages.success(request, f"Version {version.name} is being cut.")
    return HttpResponseRedirect(reverse("exports:version_detail", args=[version.pk]))


@require_POST
def job_start(request: HttpRequest, pk: int) -> HttpResponse:
    _curator(request)
    version = get_object_or_404(DatasetVersion, pk=pk)
    try:
        config = json.loads(request.POST.get("config") or "{}")
        if not isinstance(config, dict):
            raise TrainingJobError("the config is a JSON object of key: value")
        kind = request.POST.get("kind", "stage1")
        # The form shows every default; send only what was edited, so a preset's values are
        # not overridden by the defaults that came along.
        defaults = default_config(kind) if kind in TrainingJob.Kind.values else {}
        config = {k: v for k, v in config.items() if defaults.get(k, object()) != v}
        job = start_training_job(
            version=version,
            kind=kind,
            preset=request.POST.get("preset", ""),
            gpus=int(request.POST.get("gpus") or 1),
            config=config,
            created_by=request.user,
        )
    except (TrainingJobError, ValueError) as exc:
        messages.error(request, f"Cannot start the job: {exc}")
        return HttpResponseRedirect(reverse("exports:version_detail", args=[pk]))
    return HttpResponseRedirect(reverse("exports:job_detail", args=[job.pk]))


def _polyline(points: list[tuple[int, float]], x_max: int, y_min: float, y_max: float) -> str:
    span = (y_max - y_min) or 1.0
    return " ".join(
        f"{CHART_W * s / max(x_max, 1):.1f},{CHART_H - CHART_H * (v - y_min) / span:.1f}"
        for s, v in points
    )


def loss_chart(job: TrainingJob) -> dict:
    series = loss_series(job)
    values = [v for pts in series.values() for _, v in pts]
    if not values:
        return {"lines": [], "width": CHART_W, "height": CHART_H}
    x_max = max(s for pts in series.values() for s, _ in pts)
    y_min, y_max = min(values), max(values)
    lines = [
        {
            "name": name,
            "colour": COLOURS[n % len(COLOURS)],
            "points": _polyline(pts, x_max, y_min, y_max),
            "last": pts[-1][1],
        }
        for n, (name, pts) in enumerate(sorted(series.items()))
    ]
    return {"lines": lines, "width": CHART_W, "height": CHART_H, "y_min": y_min,
            "y_max": y_max, "x_max": x_max}  # fmt: skip


@require_GET
@vary_on_htmx
def job_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob.objects.select_related("version"), pk=pk)
    last = job.metrics.order_by("-line").first()
    context = {
        "job": job,
        "chart": loss_chart(job),
        "last": last.values if last else {},
        "can_cancel": has_role(request.user, CURATOR) and job.is_open,
    }
    template = "exports/job_detail.html" + ("#metrics" if wants_fragment(request) else "")
    return render(request, template, context)


@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    _curator(request)
    job = get_object_or_404(TrainingJob, pk=pk)
    try:
        cancel_training_job(job=job)
        messages.success(request, "Cancelling the job.")
    except TrainingJobError as exc:
        messages.error(request, str(exc))
    return HttpResponseRedirect(reverse("exports:job_detail", args=[pk]))


@require_GET
def webhook_log(request: HttpRequest) -> HttpResponse:
    _curator(request)
    deliveries = WebhookDelivery.objects.select_related("webhook")[:100]
    return render(request, "exports/webhook_log.html", {"deliveries": deliveries})
