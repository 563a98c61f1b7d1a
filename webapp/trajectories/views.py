"""The trajectory editor: a queue per dataset, leased one trajectory at a time, and the page
where an annotator corrects Q, the chain A_0, F_0, A_1, ... and the final answer.

Every write is an htmx POST to ``edit`` that answers with out-of-band fragments of
``trajectories/editor.html``: the blocks that changed and the document's state (its version
and status), nothing else. Each edit carries the version the page showed; a stale one gets 409
Conflict and the conflict panel (keep mine / take theirs), as in region review. Without
JavaScript the same forms post normally and redirect back to the page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from training.formats import ERROR_TYPES
from webapp.catalog.models import Dataset
from webapp.core.http import (
    BadInput,
    HtmxRequest,
    parse_int,
    svg_rect,
    upload_in_temporary_folder,
    upload_name,
    vary_on_htmx,
)
from webapp.core.importing.report import ON_ERROR, ImportFailed
from webapp.core.policy import IMPORT, READ, WRITE, allow, allows, scope
from webapp.jobs.models import Run
from webapp.regions.models import Region
from webapp.trajectories import services
from webapp.trajectories.diff import changed, word_diff
from webapp.trajectories.importing import import_trajectories
from webapp.trajectories.models import (
    Trajectory,
    TrajectoryChange,
    TrajectoryLease,
)
from webapp.trajectories.queue import BadFilter, QueueFilters, open_trajectories
from webapp.trajectories.services import TrajectoryConflict

TEMPLATE = "trajectories/editor.html"
# The editor draws at most this many regions of the image.
REGION_LIMIT = 500
# The queue page lists this many matching trajectories.
LIST_LIMIT = 50
STATUS_ACTIONS = {
    "approve": Trajectory.Status.APPROVED,
    "reject": Trajectory.Status.REJECTED,
    "reopen": Trajectory.Status.IN_REVIEW,
}


# --- Helpers ------------------------------------------------------------------------------------


def _datasets(request: HtmxRequest):
    """The datasets and trajectories this user may edit: none of a dataset restricted to other
    annotators (``webapp.core.policy.scope``)."""
    return scope(Dataset.objects.all(), request.user, "")


def _trajectories(request: HtmxRequest):
    return scope(Trajectory.objects.all(), request.user, "dataset")


def _filters(query) -> QueueFilters:
    try:
        return QueueFilters.from_query(query)
    except BadFilter as error:
        raise Http404(str(error)) from None


def _editor_url(pk: int, filters: QueueFilters | None = None) -> str:
    query = filters.as_query() if filters else {}
    url = reverse("trajectories:editor", args=[pk])
    return f"{url}?{urlencode(query)}" if query else url


def _queue_url(dataset: Dataset, filters: QueueFilters, **extra: str) -> str:
    query = filters.as_query() | extra
    url = reverse("trajectories:queue", args=[dataset.name])
    return f"{url}?{urlencode(query)}" if query else url


def _regions(trajectory: Trajectory) -> list[Region]:
    """The image's regions with their SVG rectangles (one query)."""
    regions = list(
        Region.objects.filter(image_id=trajectory.image_id)
        .only("pk", "x0", "y0", "x1", "y1", "phrase", "status", "origin",
              "image_width", "image_height")
        .order_by("pk")[:REGION_LIMIT]
    )  # fmt: skip
    longer_side = max(trajectory.image.width, trajectory.image.height)
    label = {"size": max(round(longer_side / 45, 1), 6), "pad": max(round(longer_side / 200, 1), 1)}
    for region in regions:
        region.svg = svg_rect(region.x0, region.y0, region.x1, region.y1)
        region.label = label
    return regions


def _decorate(trajectory: Trajectory) -> list:
    """Each step with the word diff of its answer against the one before; the final answer's
    diff against the last answer. Works on the prefetched steps: no query."""
    steps = list(trajectory.steps.all())
    previous = None
    for step in steps:
        step.diff = word_diff(previous.response, step.response) if previous else []
        step.has_diff = changed(step.diff)
        step.next_k = step.k + 1
        previous = step
    last = steps[-1].response if steps else ""
    trajectory.final_diff = (
        word_diff(last, trajectory.final_answer) if trajectory.final_answer else []
    )
    trajectory.final_differs = changed(trajectory.final_diff)
    return steps


def _context(request: HtmxRequest, trajectory: Trajectory, **extra: Any) -> dict[str, Any]:
    steps = _decorate(trajectory)
    return {
        "trajectory": trajectory,
        "steps": steps,
        # Reversed once: every block of every step posts to it.
        "edit_url": reverse("trajectories:edit", args=[trajectory.pk]),
        "error_types": ERROR_TYPES,
        "error_keys": list(enumerate(ERROR_TYPES, start=1)),
        **extra,
    }


def _changes_response(
    request: HtmxRequest, trajectory_id: int, parts: set[str], ks: set[int] = frozenset()
) -> HttpResponse:
    """The blocks that changed (out of band) and the document's state.

    ``parts`` names the blocks: ``question``, ``final``, ``chain`` (every step, after a step was
    added or removed) and ``steps`` (only the steps ``ks``).
    """
    if not request.htmx:
        return HttpResponseRedirect(_editor_url(trajectory_id))
    trajectory = services.load_document(trajectory_id)
    context = _context(request, trajectory, parts=parts, oob=True)
    context["changed_steps"] = [s for s in context["steps"] if s.k in ks]
    return render(request, f"{TEMPLATE}#changes", context)


def _bad_input_response(request: HtmxRequest, trajectory_id: int, message: str) -> HttpResponse:
    if not request.htmx:
        # Without JavaScript there is no panel to show it in; the page carries it instead.
        return HttpResponseRedirect(
            _editor_url(trajectory_id) + "?" + urlencode({"error": message})
        )
    response = render(request, f"{TEMPLATE}#notice", {"message": message}, status=422)
    return reswap(retarget(response, "#notice"), "innerHTML")


def _theirs_and_mine(current: dict | None, mine: dict[str, str]) -> list[tuple[str, str, str]]:
    """Rows of the conflict panel: what the annotator sent beside what is there now."""
    if current is None:
        return []
    action = mine.get("action", "")
    steps = current["steps"]

    def step_value(field: str) -> str:
        k = mine.get("k", "")
        if k.isdigit() and int(k) < len(steps):
            return steps[int(k)][field]
        return "(no such step any more)"

    if action == "question":
        return [("question", current["question"], mine.get("text", ""))]
    if action == "final":
        return [("final answer", current["final_answer"], mine.get("text", ""))]
    if action == "response":
        return [(f"A_{mine.get('k')}", step_value("response"), mine.get("text", ""))]
    if action == "feedback":
        return [(f"F_{mine.get('k')}", step_value("feedback"), mine.get("text", ""))]
    if action == "errors":
        theirs = step_value("error_types")
        theirs = ", ".join(theirs) if isinstance(theirs, list) else theirs
        return [(f"error types of A_{mine.get('k')}", theirs, mine.get("error_types", ""))]
    if action in STATUS_ACTIONS:
        return [("status", current["status"], STATUS_ACTIONS[action])]
    return []


def _conflict_response(
    request: HtmxRequest, trajectory_id: int, conflict: TrajectoryConflict, mine: dict
) -> HttpResponse:
    """409 with the other person's version beside the annotator's, to keep one or the other."""
    current = Trajectory.objects.select_related("updated_by").filter(pk=trajectory_id).first()
    rows = _theirs_and_mine(conflict.current, mine)
    context = {
        "current": current,
        "mine": {k: v for k, v in mine.items() if k != "version"},
        "rows": rows,
        # Adding or removing a step on a chain someone else changed could hit the wrong step:
        # those are redone by hand after "take theirs".
        "can_keep_mine": bool(rows) or mine.get("action") == "use_last",
        "trajectory_id": trajectory_id,
    }
    response = render(request, f"{TEMPLATE}#conflict", context, status=409)
    if request.htmx:
        response = reswap(retarget(response, "#conflict"), "innerHTML")
    return response


def _mine(request: HtmxRequest) -> dict[str, str]:
    """What the annotator posted, flat (the error-type checkboxes joined), for keep-mine."""
    mine = {
        k: v for k, v in request.POST.items() if k not in ("csrfmiddlewaretoken", "error_types")
    }
    if "error_types" in request.POST or request.POST.get("action") == "errors":
        mine["error_types"] = ",".join(request.POST.getlist("error_types"))
    return mine


def _changes_for(
    request: HtmxRequest, trajectory: Trajectory
) -> tuple[dict[str, Any], set[str], set[int]]:
    """The service changes of one posted action, and which blocks it re-renders."""
    post = request.POST
    action = post.get("action", "")
    text = post.get("text", "")
    if action in STATUS_ACTIONS:
        return {"status": STATUS_ACTIONS[action]}, {"status"}, set()
    if action == "question":
        return {"question": text}, {"question"}, set()
    if action == "final":
        return {"final_answer": text}, {"final"}, set()
    if action == "use_last":
        last = trajectory.steps.order_by("-k").values_list("response", flat=True).first() or ""
        return {"final_answer": last}, {"final"}, set()
    if action == "add_step":
        at = parse_int(post.get("at"), "at")
        previous = trajectory.steps.filter(k=max(at - 1, 0)).values_list("response", flat=True)
        # The new answer starts as a copy of the one before it: the editor revises from there.
        response = text.strip() or (previous.first() or "")
        return {"add_step": {"at": at, "response": response}}, {"chain", "final"}, set()
    k = parse_int(post.get("k"), "k")
    if action == "remove_step":
        return {"remove_step": k}, {"chain", "final"}, set()
    if action == "response":
        # The diff of the next answer and of the final answer read this one too.
        return {"edit_steps": {k: {"response": text}}}, {"steps", "final"}, {k, k + 1}
    if action == "feedback":
        return {"edit_steps": {k: {"feedback": text}}}, {"steps"}, {k}
    if action == "errors":
        types = [t for value in post.getlist("error_types") for t in value.split(",") if t]
        return {"edit_steps": {k: {"error_types": types}}}, {"steps"}, {k}
    raise BadInput(f"unknown action {action!r}")


# --- The queue ----------------------------------------------------------------------------------


@allow("trajectories", READ)
@require_GET
@vary_on_htmx
def index(request: HtmxRequest) -> HttpResponse:
    """Datasets with their trajectories waiting for people, each linking to its queue."""
    waiting = dict(
        _trajectories(request)
        .filter(status__in=services.OPEN_STATUSES)
        .values("dataset_id")
        .annotate(n=Count("pk"))
        .values_list("dataset_id", "n")
    )
    return render(request, "trajectories/queue.html", _index_context(request, waiting))


def _index_context(request: HtmxRequest, waiting: dict[int, int], **extra: Any) -> dict:
    all_datasets = list(_datasets(request).order_by("name").only("pk", "name"))
    datasets = [d for d in all_datasets if d.pk in waiting]
    for dataset in datasets:
        dataset.waiting = waiting[dataset.pk]
    return {
        "datasets": datasets,
        "all_datasets": all_datasets,
        "can_import": allows(request.user, "trajectories", IMPORT),
        "statuses": Trajectory.Status.choices,
        **extra,
    }


@allow("trajectories", IMPORT)
@require_POST
@vary_on_htmx
def upload(request: HtmxRequest) -> HttpResponse:
    """Import a JSONL file of trajectories (curators); errors are listed by line and field."""
    uploaded = request.FILES.get("file")
    dataset = request.POST.get("dataset", "")
    on_error = request.POST.get("on_error", "abort")
    status = request.POST.get("status", Trajectory.Status.IN_REVIEW)
    errors: list[str] = []
    if uploaded is None:
        errors.append("file: choose a .jsonl file")
    if on_error not in ON_ERROR or status not in Trajectory.Status.values:
        errors.append("on_error and status must be among the choices offered")
    if not errors:
        name = upload_name(uploaded, "upload.jsonl")
        with upload_in_temporary_folder(uploaded, name=name, prefix="fgam-trajectories-") as path:
            try:
                report = import_trajectories(
                    dataset=dataset, file=path, on_error=on_error, status=status,
                    user=request.user,
                )  # fmt: skip
            except ImportFailed as failed:
                errors = [str(e).replace(str(path), name) for e in failed.report.errors[:200]]
            else:
                messages.success(request, report.summary().replace(str(path), name))
                for line in report.error_lines(50):
                    messages.warning(request, "skipped: " + line.replace(str(path), name))
                return HttpResponseRedirect(reverse("trajectories:queue", args=[dataset]))
    waiting = dict(
        _trajectories(request)
        .filter(status__in=services.OPEN_STATUSES)
        .values("dataset_id")
        .annotate(n=Count("pk"))
        .values_list("dataset_id", "n")
    )
    context = _index_context(request, waiting, import_errors=errors)
    return render(request, "trajectories/queue.html", context, status=400)


@allow("trajectories", READ)
@require_GET
@vary_on_htmx
def queue(request: HtmxRequest, name: str) -> HttpResponse:
    """A dataset's queue: filters, counts by status, the matching trajectories, "Start editing"."""
    dataset = get_object_or_404(_datasets(request), name=name)
    filters = _filters(request.GET)
    counts = Trajectory.objects.filter(dataset=dataset).aggregate(
        total=Count("pk"),
        **{s: Count("pk", filter=Q(status=s)) for s in Trajectory.Status.values},
    )
    matching = open_trajectories(dataset.pk, filters)
    context = {
        "dataset": dataset,
        "filters": filters,
        "counts": counts,
        "status_counts": [(s, label, counts[s]) for s, label in Trajectory.Status.choices],
        "matching": matching.count(),
        "rows": list(
            matching.order_by("pk").only(
                "pk", "question", "status", "seeded_error", "run_id", "version", "updated_at"
            )[:LIST_LIMIT]
        ),
        "runs": list(
            Run.objects.filter(dataset=dataset, kind=Run.Kind.TRAJECTORY)
            .order_by("-pk")
            .only("pk", "model_id")[:50]
        ),
        "error_types": ERROR_TYPES,
        "empty": request.GET.get("empty") == "1",
        "my_lease": TrajectoryLease.objects.filter(
            dataset=dataset, user=request.user, expires_at__gt=timezone.now()
        ).first(),
    }
    return render(request, "trajectories/queue.html", context)


@allow("trajectories", WRITE)
@require_POST
def start(request: HtmxRequest, name: str) -> HttpResponse:
    """Lease the next matching trajectory to this annotator and open it."""
    dataset = get_object_or_404(_datasets(request), name=name)
    filters = _filters(request.POST)
    pk = services.claim_next(dataset_id=dataset.pk, user=request.user, filters=filters)
    if pk is None:
        return HttpResponseRedirect(_queue_url(dataset, filters, empty="1"))
    return HttpResponseRedirect(_editor_url(pk, filters))


@allow("trajectories", WRITE)
@require_POST
def next_trajectory(request: HtmxRequest, pk: int) -> HttpResponse:
    """Give this trajectory back and lease the next one (skip and next are the same move)."""
    trajectory = get_object_or_404(_trajectories(request).select_related("dataset"), pk=pk)
    filters = _filters(request.POST)
    services.release_lease(trajectory_id=pk, user=request.user)
    next_pk = services.claim_next(
        dataset_id=trajectory.dataset_id, user=request.user, filters=filters, exclude=[pk]
    )
    if next_pk is None:
        return HttpResponseRedirect(_queue_url(trajectory.dataset, filters, empty="1"))
    return HttpResponseRedirect(_editor_url(next_pk, filters))


# --- The editor ---------------------------------------------------------------------------------


@allow("trajectories", READ)
@require_GET
@vary_on_htmx
def editor(request: HtmxRequest, pk: int) -> HttpResponse:
    """One trajectory beside its image; a fixed number of queries whatever its length."""
    try:
        trajectory = services.load_document(pk, within=_trajectories(request))
    except Trajectory.DoesNotExist:
        raise Http404("no such trajectory") from None
    filters = _filters(request.GET)
    lease = TrajectoryLease.objects.select_related("user").filter(trajectory_id=pk).first()
    image = trajectory.image
    context = _context(
        request,
        trajectory,
        image=image,
        dataset=trajectory.dataset,
        regions=_regions(trajectory),
        filters=filters,
        filter_fields=filters.as_query(),
        lease=lease if lease and lease.expires_at > timezone.now() else None,
        lease_is_mine=bool(lease and lease.user_id == request.user.pk),
        has_file=bool(image.storage_path or image.uri.startswith(("http://", "https://"))),
        queue_url=_queue_url(trajectory.dataset, filters),
        error=request.GET.get("error", ""),
        parts={"question", "chain", "final", "status"},
    )
    return render(request, TEMPLATE, context)


@allow("trajectories", READ)
@require_GET
@vary_on_htmx
def document(request: HtmxRequest, pk: int) -> HttpResponse:
    """The whole document as it is now: "take theirs" after a conflict swaps this in."""
    if not _trajectories(request).filter(pk=pk).exists():
        raise Http404("no such trajectory")
    return _changes_response(request, pk, {"question", "chain", "final", "status"})


@allow("trajectories", WRITE)
@require_POST
@vary_on_htmx
def edit(request: HtmxRequest, pk: int) -> HttpResponse:
    """One action on the document (see ``_changes_for``), carrying the version it read."""
    trajectory = get_object_or_404(_trajectories(request).only("pk", "dataset_id"), pk=pk)
    mine = _mine(request)
    try:
        version = parse_int(request.POST.get("version"), "version")
        changes, parts, ks = _changes_for(request, trajectory)
        services.update_trajectory(
            trajectory_id=pk, expected_version=version, changes=changes, user=request.user
        )
    except TrajectoryConflict as conflict:
        return _conflict_response(request, pk, conflict, mine)
    except ValueError as error:  # BadInput included
        return _bad_input_response(request, pk, str(error))
    services.renew_lease(trajectory_id=pk, user=request.user)
    return _changes_response(request, pk, parts | {"status"}, ks)


# --- History ------------------------------------------------------------------------------------


def _describe(before: dict | None, after: dict | None) -> list[tuple[str, str, str]]:
    """(what, before, after) for each part of the document a change touched."""
    before, after = before or {}, after or {}
    rows = []
    for name, label in (
        ("question", "question"),
        ("status", "status"),
        ("final_answer", "final answer"),
    ):
        old_value, new_value = before.get(name) or "", after.get(name) or ""
        if old_value != new_value:
            rows.append((label, old_value, new_value))
    old, new = before.get("steps") or [], after.get("steps") or []
    if len(old) != len(new):
        rows.append(("steps", f"{len(old)} steps", f"{len(new)} steps"))
    for k, (a, b) in enumerate(zip(old, new, strict=False)):
        for field, label in (("response", f"A_{k}"), ("feedback", f"F_{k}")):
            if a.get(field) != b.get(field):
                rows.append((label, a.get(field) or "", b.get(field) or ""))
        if a.get("error_types") != b.get("error_types"):
            rows.append(
                (f"error types of A_{k}", ", ".join(a.get("error_types") or []),
                 ", ".join(b.get("error_types") or []))
            )  # fmt: skip
    return rows


@allow("trajectories", READ)
@require_GET
@vary_on_htmx
def history(request: HtmxRequest, pk: int) -> HttpResponse:
    """Who changed the trajectory, when, and what; each version can be restored."""
    trajectory = get_object_or_404(_trajectories(request).only("pk", "version"), pk=pk)
    changes = list(
        TrajectoryChange.objects.filter(trajectory_id=pk)
        .select_related("user", "run")
        .order_by("-pk")
    )
    for change in changes:
        change.diff = _describe(change.before, change.after)
    context = {"trajectory": trajectory, "changes": changes}
    name = f"{TEMPLATE}#history" if request.htmx else "trajectories/history.html"
    return render(request, name, context)


@allow("trajectories", WRITE)
@require_POST
@vary_on_htmx
def restore(request: HtmxRequest, change_id: int) -> HttpResponse:
    """Bring the trajectory back to the state after an earlier change, as a new change."""
    change = get_object_or_404(
        TrajectoryChange.objects.filter(trajectory__in=_trajectories(request)).only(
            "pk", "trajectory_id"
        ),
        pk=change_id,
    )
    pk = change.trajectory_id
    try:
        version = parse_int(request.POST.get("version"), "version")
        services.restore_version(change_id=change_id, expected_version=version, user=request.user)
    except TrajectoryConflict as conflict:
        return _conflict_response(request, pk, conflict, {"action": "restore"})
    except ValueError as error:
        return _bad_input_response(request, pk, str(error))
    return _changes_response(request, pk, {"question", "chain", "final", "status"})
