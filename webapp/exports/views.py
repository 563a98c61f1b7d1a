"""Dataset versions and training jobs in the browser.

Version list and detail (counts, size, hash, filters, lineage, the jobs that used it), the
curator's "Cut a version" form, a training job page whose metrics block is an htmx partial
(``exports/job_detail.html#metrics``) that polls while the job is open, and the webhook
delivery log. Every form is a plain POST, so the pages work without JavaScript.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog.models import Dataset
from webapp.core import demo_models
from webapp.core.http import HtmxRequest, vary_on_htmx, wants_fragment
from webapp.core.policy import READ, WRITE, allow, allows, scope_versions
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


def _versions(request: HttpRequest):
    """The versions this user may see: none cut from a dataset restricted to other annotators."""
    return scope_versions(DatasetVersion.objects.all(), request.user)


@allow("versions", READ)
@require_GET
@vary_on_htmx
def version_list(request: HttpRequest) -> HttpResponse:
    """Ready versions, newest first; curators also see the ones being cut or failed."""
    versions = _versions(request).prefetch_related("datasets").defer("manifest")
    curator = allows(request.user, "versions", WRITE)
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


@allow("versions", READ)
@require_GET
@vary_on_htmx
def version_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    """The version page; for htmx polls, only its progress block while it is being cut."""
    version = get_object_or_404(
        _versions(request).prefetch_related("datasets", "derived_from", "derivatives"), pk=pk
    )
    if not version.is_ready and not allows(request.user, "versions", WRITE):
        raise Http404("not ready")
    fragment = wants_fragment(request)
    if fragment and request.htmx.target == "version-progress":
        if version.is_open:
            return render(request, "exports/version_detail.html#progress", {"version": version})
        # Done (or failed): the counts, hash and job form change too, so reload the page.
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    can_train = allows(request.user, "training-jobs", WRITE) and version.is_ready
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


@allow("versions", WRITE)
@require_POST
def version_cut(request: HttpRequest) -> HttpResponse:
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


@allow("training-jobs", WRITE)
@require_POST
def job_start(request: HttpRequest, pk: int) -> HttpResponse:
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
        if request.POST.get("demo_model"):
            config["model"] = request.POST["demo_model"]
        # Demo names become folders (a demo model brings its short-run settings); the models are
        # checked inside the transaction, so one that is not there rolls the job back unqueued.
        config = demo_models.demo_job_config(kind, config)
        with transaction.atomic():
            job = start_training_job(
                version=version,
                kind=kind,
                preset=request.POST.get("preset", ""),
                gpus=int(request.POST.get("gpus") or 1),
                config=config,
                created_by=request.user,
            )
            demo_models.check_job_models({**default_config(job.kind), **job.config})
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


@allow("training-jobs", READ)
@require_GET
@vary_on_htmx
def job_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    jobs = TrainingJob.objects.filter(version__in=_versions(request))
    job = get_object_or_404(jobs.select_related("version"), pk=pk)
    last = job.metrics.order_by("-line").first()
    context = {
        "job": job,
        "chart": loss_chart(job),
        "last": last.values if last else {},
        "can_cancel": allows(request.user, "training-jobs", WRITE) and job.is_open,
        "can_benchmark": allows(request.user, "benchmarks", WRITE),
    }
    template = "exports/job_detail.html" + ("#metrics" if wants_fragment(request) else "")
    return render(request, template, context)


@allow("training-jobs", WRITE)
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=pk)
    try:
        cancel_training_job(job=job)
        messages.success(request, "Cancelling the job.")
    except TrainingJobError as exc:
        messages.error(request, str(exc))
    return HttpResponseRedirect(reverse("exports:job_detail", args=[pk]))


@allow("webhooks", READ)
@require_GET
def webhook_log(request: HttpRequest) -> HttpResponse:
    deliveries = WebhookDelivery.objects.select_related("webhook")[:100]
    return render(request, "exports/webhook_log.html", {"deliveries": deliveries})
