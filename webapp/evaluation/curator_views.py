"""The curator's pages: set a round up (items, systems, responses, baseline), check it for
responses that name a model, open and close it, follow its progress, and read the results.

Every page here is curator-only (raters and annotators get 403, see ``webapp.core.policy``):
these are the only pages that show system names. Writes are plain form POSTs that redirect
back with a message.
"""

from __future__ import annotations

import io
import json

from django.contrib import messages
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.core import demo_models
from webapp.core.http import BadInput, HtmxRequest, parse_int, vary_on_htmx
from webapp.core.policy import READ, WRITE, allow
from webapp.evaluation import results as results_module
from webapp.evaluation import services
from webapp.evaluation.generation import start_generation
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Assignment, Round, System, default_criteria
from webapp.evaluation.stats.ratings import RatingDataError
from webapp.exports.models import DatasetVersion


def _round(request: HtmxRequest, pk: int) -> Round:
    return get_object_or_404(Round.objects.select_related("baseline", "version"), pk=pk)


def _back(round_: Round) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("evaluation:round_detail", args=[round_.pk]))


def _int(value: str | None, name: str, default: int | None = None) -> int:
    """``parse_int``, failing with this app's ``InputError`` ("field: problem")."""
    try:
        return parse_int(value, name, default=default)
    except BadInput:
        raise InputError(f"{name}: must be a whole number") from None


def _upload_lines(request: HtmxRequest, field: str):
    upload = request.FILES.get(field)
    if upload is None:
        raise InputError(f"{field}: choose a JSONL file")
    return upload.name, io.TextIOWrapper(upload.file, encoding="utf-8", errors="strict")


def _attempt(request: HtmxRequest, round_: Round, action, success: str) -> HttpResponseRedirect:
    """Run a service call; its InputError becomes an error message, nothing is written."""
    try:
        outcome = action()
    except (InputError, UnicodeDecodeError) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, success.format(outcome))
    return _back(round_)


@allow("rounds")
@require_http_methods(["GET", "POST"])
def round_new(request: HtmxRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        try:
            criteria = _criteria(request.POST.get("criteria", ""))
            round_ = services.create_round(
                criteria=criteria,
                name=request.POST.get("name", ""),
                description=request.POST.get("description", ""),
                raters_per_item=_int(request.POST.get("raters_per_item"), "raters_per_item", 3),
                seed=_int(request.POST.get("seed"), "seed", 0),
                user=request.user,
            )
        except InputError as exc:
            error = str(exc)
        else:
            return _back(round_)
    criteria_text = request.POST.get("criteria") or json.dumps(default_criteria(), indent=2)
    context = {"error": error, "form": request.POST, "criteria": criteria_text}
    return render(request, "evaluation/round_new.html", context, status=422 if error else 200)


def _criteria(text: str) -> dict | None:
    """The criteria JSON from the form (blank: the paper's defaults)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"criteria: not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(value, dict):
        raise InputError("criteria: a JSON object with likert, hallucination and error_types")
    return value


@allow("rounds", READ)
@require_GET
@vary_on_htmx
def round_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)
    items = round_.items.count()
    systems = list(round_.systems.annotate(n=Count("responses")).order_by("pk"))
    strata = list(
        round_.items.values("stratum").annotate(n=Count("pk")).order_by("-n", "stratum")[:20]
    )
    draft = round_.status == Round.Status.DRAFT
    now = timezone.now()
    seats = Assignment.objects.filter(round=round_)
    per_rater = list(
        seats.exclude(rater=None)
        .values("rater__username")
        .annotate(
            done=Count("pk", filter=Q(status="done")),
            pending=Count("pk", filter=Q(status="pending", leased_until__gte=now)),
        )
        .order_by("-done", "rater__username")
    )
    context = {
        "round": round_,
        "items": items,
        "strata": strata,
        "systems": systems,
        "generating": any(
            s.status in (System.Status.QUEUED, System.Status.RUNNING) for s in systems
        ),
        "draft": draft,
        "problems": services.readiness(round_) if draft else [],
        "leaks": services.leak_warnings(round_) if draft else [],
        "versions": DatasetVersion.objects.filter(status=DatasetVersion.Status.READY).order_by(
            "-created_at"
        )[:50],
        "seat_counts": seats.aggregate(
            total=Count("pk"),
            done=Count("pk", filter=Q(status="done")),
            pending=Count("pk", filter=Q(status="pending", leased_until__gte=now)),
            handovers=Count("pk", filter=Q(handovers__gt=0)),
        ),
        "per_rater": per_rater,
        "sample_items": list(round_.items.select_related("image")[:10]),
    }
    return render(request, "evaluation/round_detail.html", context)


@allow("rounds", WRITE)
@require_POST
def items_sample(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)

    def sample() -> int:
        version = DatasetVersion.objects.filter(pk=_int(request.POST.get("version"), "version"))
        if not version.exists():
            raise InputError("version: choose a ready dataset version")
        return services.sample_from_version(
            round_=round_, version=version.get(),
            n=_int(request.POST.get("n"), "n", services.DEFAULT_SAMPLE_SIZE),
            seed=_int(request.POST.get("seed"), "seed", round_.seed),
            stratify=request.POST.get("stratify") == "on",
        )  # fmt: skip

    return _attempt(request, round_, sample, "Sampled {} items.")


@allow("rounds", WRITE)
@require_POST
def items_import(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)

    def load() -> int:
        name, lines = _upload_lines(request, "file")
        n = request.POST.get("n", "").strip()
        return services.import_items(
            round_=round_, lines=lines, name=name, n=_int(n, "n") if n else None,
            stratify=request.POST.get("stratify") == "on",
        )  # fmt: skip

    return _attempt(request, round_, load, "Imported {} items.")


@allow("rounds", WRITE)
@require_POST
def drop_incomplete(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)
    return _attempt(
        request, round_, lambda: services.drop_incomplete_items(round_=round_),
        "Removed {} items some system had no response for.",
    )  # fmt: skip


@allow("rounds", WRITE)
@require_POST
def system_add(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)

    def add() -> str:
        system = services.add_system(round_=round_, name=request.POST.get("name", ""))
        if request.FILES.get("file"):
            name, lines = _upload_lines(request, "file")
            try:
                services.import_responses(system=system, lines=lines, name=name)
            except InputError:
                system.delete()
                raise
        return system.name

    return _attempt(request, round_, add, "Added system {}.")


def _system(request: HtmxRequest, pk: int) -> System:
    return get_object_or_404(System.objects.select_related("round"), pk=pk)


@allow("rounds", WRITE)
@require_POST
def responses_import(request: HtmxRequest, pk: int) -> HttpResponse:
    system = _system(request, pk)

    def load() -> int:
        name, lines = _upload_lines(request, "file")
        return services.import_responses(system=system, lines=lines, name=name)

    return _attempt(request, system.round, load, f"Imported {{}} responses for {system.name}.")


@allow("rounds", WRITE)
@require_POST
def generate(request: HtmxRequest, pk: int) -> HttpResponse:
    system = _system(request, pk)

    def queue() -> str:
        # A demo name becomes its folder; a model that is not there is refused before queueing.
        try:
            model, rm = (
                demo_models.check_model_field(request.POST.get(f, ""), role=role, field=f)
                for f, role in (("model", "M"), ("rm", "RM"))
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        start_generation(system=system, model=model, rm=rm, k=_int(request.POST.get("k"), "k", 2))
        return system.name

    return _attempt(request, system.round, queue, "Queued a rectify job for {}.")


@allow("rounds", WRITE)
@require_POST
def baseline(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)

    def choose() -> str:
        raw = request.POST.get("baseline", "")
        system = round_.systems.filter(pk=_int(raw, "baseline")).first() if raw else None
        services.set_baseline(round_=round_, system=system)
        return system.name if system else "none"

    return _attempt(request, round_, choose, "Baseline: {}.")


@allow("rounds", WRITE)
@require_POST
def round_open(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)
    acknowledge = request.POST.get("acknowledge_leaks") == "on"
    return _attempt(
        request, round_,
        lambda: services.open_round(round_=round_, acknowledge_leaks=acknowledge).name,
        "Round {} is open to raters.",
    )  # fmt: skip


@allow("rounds", WRITE)
@require_POST
def round_close(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)
    return _attempt(
        request, round_, lambda: services.close_round(round_=round_).name,
        "Round {} is closed; its results are final.",
    )  # fmt: skip


# --- Results ------------------------------------------------------------------------------------


def _results_context(round_: Round) -> dict:
    names = results_module.system_names(round_)
    baseline = round_.baseline.key if round_.baseline_id else None
    try:
        res = results_module.results_for(round_)
    except RatingDataError as error:
        return {"round": round_, "error": str(error)}
    tables = []
    for key, title in results_module.TABLES.items():
        if key == "table3" and baseline is None:
            continue
        table = results_module.table(res, names, key, baseline)
        tables.append({"key": key, "title": title, "html": table.to_html()})
    return {
        "round": round_,
        "results": res,
        "tables": tables,
        "chart": results_module.chart(res, names),
        "formats": list(results_module.FORMATS),
        "now": timezone.now(),
        "live": round_.status == Round.Status.OPEN,
    }


@allow("rounds", READ)
@require_GET
@vary_on_htmx
def results(request: HtmxRequest, pk: int) -> HttpResponse:
    """The round's statistics: live (the page polls itself) while open, final once closed."""
    round_ = _round(request, pk)
    context = _results_context(round_)
    template = "evaluation/results.html"
    if request.htmx:
        template += "#results"
    return render(request, template, context)


@allow("rounds", READ)
@require_GET
def results_chart(request: HtmxRequest, pk: int) -> HttpResponse:
    round_ = _round(request, pk)
    svg = results_module.chart(
        results_module.results_for(round_), results_module.system_names(round_)
    )
    return HttpResponse(svg, content_type="image/svg+xml")


@allow("rounds", READ)
@require_GET
def results_download(request: HtmxRequest, pk: int, table: str, fmt: str) -> HttpResponse:
    round_ = _round(request, pk)
    if table not in results_module.TABLES or fmt not in results_module.FORMATS:
        raise Http404("no such table or format")
    baseline = round_.baseline.key if round_.baseline_id else None
    if table == "table3" and baseline is None:
        raise Http404("Table 3 needs a baseline system; choose one on the round's page")
    content_type, method = results_module.FORMATS[fmt]
    rendered = results_module.table(
        results_module.results_for(round_), results_module.system_names(round_), table, baseline
    )
    response = HttpResponse(
        getattr(rendered, method)(), content_type=f"{content_type}; charset=utf-8"
    )
    slug = "".join(ch if ch.isalnum() else "-" for ch in round_.name.lower()).strip("-")
    response["Content-Disposition"] = f'attachment; filename="{slug}-{table}.{fmt}"'
    return response
