"""Runs in the browser: the list, one run with its live progress, and the curator's buttons.

The progress block is an htmx partial (``jobs/run_detail.html#progress``) that reloads itself
every two seconds while the run is open and stops polling once it has ended. Cancel, resume
and retry are plain POST forms, so they work without JavaScript too.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog.models import Dataset
from webapp.core import demo_models
from webapp.core.http import HtmxRequest, vary_on_htmx, wants_fragment
from webapp.core.policy import READ, WRITE, allow, allows, scope
from webapp.jobs import captioning, pseudo_label, trajectories
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import (
    RunStateError,
    cancel_run,
    failures,
    resume_run,
    retry_failed,
    run_cost,
)

PAGE_SIZE = 50
FAILURES_SHOWN = 100


def _runs(request: HttpRequest):
    """The runs this user may see: none over a dataset restricted to other annotators."""
    return scope(Run.objects.all(), request.user, "dataset")


@allow("runs", READ)
@require_GET
def run_list(request: HtmxRequest) -> HttpResponse:
    """Runs, newest first, ``PAGE_SIZE`` at a time before ``?before=<id>``; filter by kind."""
    runs = _runs(request).select_related("dataset").defer("errors", "parameters").order_by("-pk")
    kind = request.GET.get("kind") or None
    if kind is not None:
        if kind not in Run.Kind.values:
            raise Http404("unknown kind")
        runs = runs.filter(kind=kind)
    before = request.GET.get("before")
    if before:
        if not before.isdigit():
            raise Http404("before must be an id")
        runs = runs.filter(pk__lt=int(before))
    page = list(runs[: PAGE_SIZE + 1])
    next_url = None
    if len(page) > PAGE_SIZE:
        page = page[:PAGE_SIZE]
        query = {"before": page[-1].pk} | ({"kind": kind} if kind else {})
        next_url = f"{request.path}?{urlencode(query)}"
    kinds = [
        ("all", None),
        *((k, k) for k in (Run.Kind.PSEUDO_LABEL, Run.Kind.CAPTION, Run.Kind.TRAJECTORY)),
    ]
    context = {
        "runs": page,
        "next_url": next_url,
        "kind_links": [
            (label, request.path + (f"?kind={value}" if value else ""), value == kind)
            for label, value in kinds
        ],
        "can_start": allows(request.user, "runs", WRITE),
    }
    return render(request, "jobs/run_list.html", context)


def _progress_context(request: HttpRequest, run: Run) -> dict:
    batches = dict(
        RunBatch.objects.filter(run=run)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    open_batches = sum(batches.get(s, 0) for s in RunBatch.OPEN)
    return {
        "run": run,
        "percent": round(100 * run.progress, 1),
        "done_percent": round(100 * run.done / run.total, 2) if run.total else 0,
        "failed_percent": round(100 * run.failed / run.total, 2) if run.total else 0,
        "batches": batches,
        "batch_list": [(s, batches.get(s, 0)) for s in RunBatch.Status.values if batches.get(s)],
        "failures": failures(run, limit=FAILURES_SHOWN),
        "cost": run_cost(run),
        "can_steer": allows(request.user, "runs", WRITE)
        and run.kind in (Run.Kind.PSEUDO_LABEL, Run.Kind.CAPTION, Run.Kind.TRAJECTORY),
        "can_cancel": run.is_open,
        "can_resume": run.status in (Run.Status.CANCELLED, Run.Status.FAILED)
        or (run.status == Run.Status.RUNNING and open_batches == 0),
        "can_retry": run.failed > 0 and run.status != Run.Status.QUEUED,
    }


@allow("runs", READ)
@require_GET
@vary_on_htmx
def run_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(_runs(request).select_related("dataset", "created_by"), pk=pk)
    context = _progress_context(request, run)
    template = "jobs/run_detail.html"
    return render(request, f"{template}#progress" if wants_fragment(request) else template, context)


def _steer(request: HttpRequest, pk: int, change, done: str) -> HttpResponse:
    run = get_object_or_404(Run, pk=pk)
    try:
        result = change(run=run)
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done.format(result=result))
    return HttpResponseRedirect(reverse("jobs:run_detail", args=[pk]))


@allow("runs", WRITE)
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _steer(request, pk, cancel_run, "Run cancelled.")


@allow("runs", WRITE)
@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _steer(request, pk, resume_run, "Run resumed.")


@allow("runs", WRITE)
@require_POST
def run_retry_failed(request: HttpRequest, pk: int) -> HttpResponse:
    return _steer(request, pk, retry_failed, "{result} failed items queued again.")


@allow("runs", WRITE)
@require_POST
def run_start(request: HttpRequest, name: str) -> HttpResponse:
    """The dataset page's "Start run" form: a pseudo-label or a caption run with defaults."""
    dataset = get_object_or_404(Dataset, name=name)
    kind = request.POST.get("kind")
    model = demo_models.resolve_model(request.POST.get("model", ""))
    try:
        # The model is checked once the run's other fields are (its default too), inside the
        # transaction: a model that is not there rolls the run back before anything is queued.
        with transaction.atomic():
            if kind == Run.Kind.PSEUDO_LABEL:
                mode = request.POST.get("prompt_mode") or "labels"
                labels = [x for x in request.POST.get("labels", "").split(",") if x.strip()]
                run = pseudo_label.start_pseudo_label_run(
                    dataset=dataset,
                    model=model,
                    prompt_mode=mode,
                    labels=labels if mode == "labels" else None,
                    user=request.user,
                )
                if run.parameters.get("backend") == "transformers":
                    demo_models.check_model_field(run.model_id, role="detector", field="model")
            elif kind == Run.Kind.CAPTION:
                run = captioning.start_caption_run(
                    dataset=dataset,
                    strategy=request.POST.get("strategy") or "template",
                    model=model,
                    user=request.user,
                )
                if run.parameters.get("strategy") == "local":
                    demo_models.check_model_field(run.model_id, role="captioner", field="model")
            elif kind == Run.Kind.TRAJECTORY:
                run = _start_trajectory_run(request, dataset)
            else:
                raise ValueError("choose a pseudo-label, caption or trajectory run")
    except ValueError as exc:
        messages.error(request, f"The run was not started: {exc}")
        return HttpResponseRedirect(reverse("catalog:image_grid", args=[name]))
    return HttpResponseRedirect(reverse("jobs:run_detail", args=[run.pk]))


def _start_trajectory_run(request: HttpRequest, dataset: Dataset) -> Run:
    """The "Generate trajectories" form: M and RM specs, K, and the seeded error types."""
    k = request.POST.get("k") or "3"
    if not k.isdigit():
        raise ValueError("K must be a whole number")
    seeded = request.POST.getlist("seeded_errors")
    check = demo_models.check_model_field
    return trajectories.start_trajectory_run(
        dataset=dataset,
        m=check(request.POST.get("m", ""), role="M", field="M"),
        rm=check(request.POST.get("rm", ""), role="RM", field="RM"),
        k=int(k),
        seeded_errors=seeded,
        user=request.user,
    )
