"""Benchmark jobs in the browser.

- ``/benchmarks/``: the jobs, newest first;
- ``/benchmarks/new/?probe_set=ID&training_job=ID``: the curator's form (the probe-set and
  training-job pages link here with their own id filled in), posted to ``/benchmarks/start/``;
- ``/benchmarks/<id>/``: status and progress (an htmx partial that polls while the job is
  open), then the metrics per split and parser;
- ``/benchmarks/<id>/answers/``: the answers a parser got wrong (or all of them), filterable
  by split and object, 24 at a time after ``?after=<position>``, each with its image and the
  probe's boxes drawn over it;
- ``/benchmarks/<id>/images/<probe id>/``: a probe's image, read from the probe-set folder.
  Images are named by probe, never by catalog image id, so nothing here opens the catalog.

Every job a user sees is scoped like the datasets its probe set was built from.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import Count, F, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from training.probes.layout import Probe, ProbeSetError
from training.probes.layout import ProbeSet as ProbeFolder
from webapp.benchmarks.models import PARSERS, BenchmarkAnswer, BenchmarkJob
from webapp.benchmarks.services import (
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    BenchmarkError,
    cancel_benchmark,
    start_benchmark,
)
from webapp.core.http import (
    BadInput,
    HtmxRequest,
    parse_int,
    svg_rect,
    vary_on_htmx,
    wants_fragment,
)
from webapp.core.policy import READ, WRITE, allow, allows, scope
from webapp.exports.models import TrainingJob
from webapp.probes.models import ProbeSet

PAGE_SIZE = 50
ANSWERS_PAGE_SIZE = 24
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed", "n")


def _jobs(request: HttpRequest) -> QuerySet[BenchmarkJob]:
    return scope(BenchmarkJob.objects.all(), request.user, "probe_set__datasets").distinct()


@allow("benchmarks", READ)
@require_GET
@vary_on_htmx
def benchmark_list(request: HtmxRequest) -> HttpResponse:
    jobs = list(_jobs(request).select_related("probe_set")[:PAGE_SIZE])
    return render(
        request,
        "benchmarks/list.html",
        {
            "jobs": jobs,
            "any_open": any(job.is_open for job in jobs),
            "can_start": allows(request.user, "benchmarks", WRITE),
        },
    )


@allow("benchmarks", WRITE)
@require_GET
def benchmark_new(request: HttpRequest) -> HttpResponse:
    """The start form; ``?probe_set=`` and ``?training_job=`` choose what is filled in."""
    try:
        probe_set = parse_int(request.GET.get("probe_set"), "probe_set", default=0)
        training_job = parse_int(request.GET.get("training_job"), "training_job", default=0)
    except BadInput as exc:
        raise Http404(str(exc)) from None
    return render(
        request,
        "benchmarks/new.html",
        {
            "probe_sets": ProbeSet.objects.filter(status=ProbeSet.Status.READY).order_by("-pk"),
            "training_jobs": TrainingJob.objects.filter(
                status=TrainingJob.Status.SUCCEEDED
            ).order_by("-pk")[:200],
            "selected_probe_set": probe_set,
            "selected_training_job": training_job,
            "max_batch_size": MAX_BATCH_SIZE,
            "max_concurrency": MAX_CONCURRENCY,
        },
    )


@allow("benchmarks", WRITE)
@require_POST
def benchmark_start(request: HttpRequest) -> HttpResponse:
    back = reverse("benchmarks:new") + "?" + urlencode(
        {k: request.POST.get(k, "") for k in ("probe_set", "training_job")}
    )  # fmt: skip
    try:
        probe_set = ProbeSet.objects.filter(
            pk=parse_int(request.POST.get("probe_set"), "probe set")
        ).first()
        if probe_set is None:
            raise BenchmarkError("choose a probe set")
        job_id = parse_int(request.POST.get("training_job"), "training job", default=0)
        training_job = TrainingJob.objects.filter(pk=job_id).first() if job_id else None
        if job_id and training_job is None:
            raise BenchmarkError(f"there is no training job #{job_id}")
        optional = {
            name: parse_int(request.POST.get(name), name.replace("_", " "), default=0) or None
            for name in ("max_new_tokens", "limit")
        }
        job = start_benchmark(
            probe_set=probe_set,
            training_job=training_job,
            model_spec=request.POST.get("model_spec", ""),
            batch_size=parse_int(request.POST.get("batch_size"), "batch size", default=8),
            concurrency=parse_int(request.POST.get("concurrency"), "concurrency", default=16),
            created_by=request.user,
            **optional,
        )
    except (BenchmarkError, BadInput) as exc:
        messages.error(request, f"Cannot start the benchmark: {exc}")
        return HttpResponseRedirect(back)
    return HttpResponseRedirect(reverse("benchmarks:detail", args=[job.pk]))


def metrics_table(metrics: dict) -> list[dict]:
    """One row per split and parser, "all" first, from ``metrics.json``'s ``splits``.

    >>> m = {"accuracy": 0.5, "f1": 0.4, "f1_ci95": [0.3, 0.5], "n": 4}
    >>> rows = metrics_table({"splits": {"random": {"strict": m}, "all": {"strict": m}}})
    >>> [(r["split"], r["parser"], r["f1"], r["f1_ci95"], r["wrong"]) for r in rows]
    [('all', 'strict', 0.4, [0.3, 0.5], None), ('random', 'strict', 0.4, [0.3, 0.5], None)]
    """
    splits = metrics.get("splits") or {}
    order = sorted(splits, key=lambda name: (name != "all", name))
    rows = []
    for split in order:
        for parser in PARSERS:
            values = (splits[split] or {}).get(parser)
            if not isinstance(values, dict):
                continue
            row = {"split": split, "parser": parser, "f1_ci95": values.get("f1_ci95")}
            row.update({key: values.get(key) for key in METRIC_KEYS})
            n, tp, tn = (values.get(key) for key in ("n", "tp", "tn"))
            counted = isinstance(n, int) and isinstance(tp, int) and isinstance(tn, int)
            row["wrong"] = n - tp - tn if counted else None  # type: ignore[operator]
            rows.append(row)
    return rows


@allow("benchmarks", READ)
@require_GET
@vary_on_htmx
def benchmark_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(_jobs(request).select_related("probe_set", "training_job"), pk=pk)
    fragment = wants_fragment(request)
    if fragment and not job.is_open and request.htmx.target == "bench-progress":
        # Finished: the metrics and the answers' link appear, so the whole page reloads.
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    context = {
        "job": job,
        "rows": metrics_table(job.metrics),
        "run": {k: v for k, v in job.metrics.items() if k not in ("splits", "probe_set")},
        "answers_stored": job.answers.exists(),
        "can_cancel": allows(request.user, "benchmarks", WRITE) and job.is_open,
    }
    template = "benchmarks/detail.html" + ("#progress" if fragment else "")
    return render(request, template, context)


@allow("benchmarks", WRITE)
@require_POST
def benchmark_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BenchmarkJob, pk=pk)
    try:
        cancel_benchmark(job=job)
        messages.success(request, "Cancelling the benchmark.")
    except BenchmarkError as exc:
        messages.error(request, str(exc))
    return HttpResponseRedirect(reverse("benchmarks:detail", args=[pk]))


def _box_role(n: int, count: int) -> str:
    """A spatial probe has two boxes, the subject's then the object's; one box is the object."""
    return "subject" if count == 2 and n == 0 else "object"


def _drawn(answer: BenchmarkAnswer, parser: str) -> BenchmarkAnswer:
    boxes = answer.boxes or []
    answer.rects = [  # type: ignore[attr-defined]
        {"role": _box_role(n, len(boxes)), **svg_rect(*box[:4])}
        for n, box in enumerate(boxes)
        if isinstance(box, list | tuple) and len(box) >= 4
    ]
    answer.reading = getattr(answer, parser) or "unparsed"  # type: ignore[attr-defined]
    answer.is_correct = answer.correct(parser)  # type: ignore[attr-defined]
    return answer


@allow("benchmarks", READ)
@require_GET
@vary_on_htmx
def benchmark_answers(request: HtmxRequest, pk: int) -> HttpResponse:
    """The wrong answers under one parser (``?parser=``, strict by default; ``?show=all``
    lists the right ones too), by split and object, in the probe set's order."""
    job = get_object_or_404(_jobs(request).select_related("probe_set"), pk=pk)
    parser = request.GET.get("parser") or "strict"
    if parser not in PARSERS:
        raise Http404("unknown parser")
    show = "all" if request.GET.get("show") == "all" else "wrong"
    split = request.GET.get("split", "")
    obj = request.GET.get("object", "")
    try:
        after = parse_int(request.GET.get("after"), "after", default=-1, minimum=-1)
    except BadInput as exc:
        raise Http404(str(exc)) from None

    answers = job.answers.all()
    if show == "wrong":
        answers = answers.exclude(**{parser: F("expected")})
    in_split = answers.filter(split=split) if split else answers
    objects = list(
        in_split.values("object").annotate(count=Count("pk")).order_by("-count", "object")
    )
    listed = in_split.filter(object=obj) if obj else in_split
    page = list(listed.filter(position__gt=after).order_by("position")[: ANSWERS_PAGE_SIZE + 1])
    next_url = None
    if len(page) > ANSWERS_PAGE_SIZE:
        page = page[:ANSWERS_PAGE_SIZE]
        query = {"parser": parser, "show": show, "split": split, "object": obj}
        query = {k: v for k, v in query.items() if v} | {"after": page[-1].position}
        next_url = f"{request.path}?{urlencode(query)}"
    splits = list(job.answers.values_list("split", flat=True).distinct().order_by("split"))
    context = {
        "job": job,
        "answers": [_drawn(answer, parser) for answer in page],
        "total": listed.count(),
        "next_url": next_url,
        "parser": parser,
        "parsers": PARSERS,
        "show": show,
        "split": split,
        "splits": splits,
        "object": obj,
        "objects": objects,
    }
    template = "benchmarks/answers.html"
    if wants_fragment(request) and after >= 0:
        template += "#answer_cards"  # "Load more": the next cards only
    return render(request, template, context)


@allow("benchmarks", READ)
@require_GET
def probe_image(request: HttpRequest, pk: int, probe_id: str) -> FileResponse:
    """The bytes of a probe's image from the probe-set folder (the answer row names the
    image's sha256; the folder is looked up, never a path from the request)."""
    job = get_object_or_404(_jobs(request).select_related("probe_set"), pk=pk)
    answer = get_object_or_404(BenchmarkAnswer, job=job, probe_id=probe_id)
    if not job.probe_set.path:
        raise Http404("the probe set has no folder")
    folder = ProbeFolder(root=Path(job.probe_set.path), manifest={})
    # image_path reads only the sha256 and the uri; the rest is the row's, for completeness.
    probe = Probe(
        id=answer.probe_id, image=answer.image_sha256, question=answer.question,
        answer=answer.expected, kind="pope", split=answer.split, object=answer.object,
        uri=answer.image_uri or None,
    )  # fmt: skip
    try:
        path = folder.image_path(probe)
        handle = path.open("rb")
    except (ProbeSetError, OSError):
        raise Http404("the image is not in the probe-set folder") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response
