"""The review screen: a queue of images with pending regions, leased one at a time, and the page
where an annotator accepts, rejects, rewrites, resizes and draws regions from the keyboard.

Every write is an htmx POST that answers with out-of-band fragments of ``regions/review.html``:
the changed region's table row and its SVG box, nothing else. Each edit carries the version the
page showed; a stale one gets 409 Conflict and the conflict panel (keep mine / take theirs).
Without JavaScript the same forms post normally and redirect back to the page. Each action is
also one step of the annotator's undo stack for the image, kept in the database (``UndoStep``),
so Ctrl+Z still undoes it after a reload. This module parses the forms and renders the answers;
each action's writes are one function of ``review_actions``, and the counts come from
``selectors``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from training.geometry import BoxError
from webapp.catalog.models import Dataset, Image
from webapp.core.http import BadInput, HtmxRequest, parse_int, svg_number, vary_on_htmx
from webapp.core.policy import READ, WRITE, allow, scope
from webapp.jobs.models import Run
from webapp.regions import markup, review_actions, review_marks, selectors, services
from webapp.regions.models import Lease, Region, RegionChange
from webapp.regions.provenance import attach_provenance
from webapp.regions.queue import BadFilter, QueueFilters
from webapp.regions.review_actions import Changed
from webapp.regions.services import RegionConflict

TEMPLATE = "regions/review.html"
# The review page shows at most this many regions of one image.
REGION_LIMIT = 1000
STATUSES = Region.Status.values
STATUS_ACTIONS = {
    "accept": Region.Status.ACCEPTED,
    "reject": Region.Status.REJECTED,
    "pending": Region.Status.PENDING,
}


# --- Helpers ------------------------------------------------------------------------------------


def _datasets(request: HtmxRequest):
    """The datasets, images and regions this user may review: none of a dataset restricted
    to other annotators (``webapp.core.policy.scope``)."""
    return scope(Dataset.objects.all(), request.user, "")


def _images(request: HtmxRequest):
    return scope(Image.objects.all(), request.user, "dataset")


def _regions(request: HtmxRequest):
    return scope(Region.objects.all(), request.user, "image__dataset")


def _url_pattern(name: str) -> str:
    """A route with ``{}`` where the id goes: formatting it per row is much cheaper than
    reversing it, which matters on a page of hundreds of regions."""
    return reverse(name, args=[987654321]).replace("987654321", "{}")


def _decorate(request: HttpRequest, regions: list, *, oob: bool = False) -> list:
    """Provenance (two queries) and the markup of each region's row and box (``markup``).

    ``regions`` are ``Region`` instances or ``markup.RegionView`` rows."""
    attach_provenance(regions)
    ctx = markup.RowContext(
        csrf_input=markup.csrf_input(get_token(request)),
        action_url=_url_pattern("regions:region_action"),
        history_url=_url_pattern("regions:history"),
        delete_url=_url_pattern("regions:region_delete"),
        run_url=_url_pattern("jobs:run_detail"),
    )
    for region in regions:
        region.row_html = markup.row_html(region, ctx, oob=oob)
        region.box_html = markup.box_html(region, oob=oob)
    return regions


def _filters(query) -> QueueFilters:
    try:
        return QueueFilters.from_query(query)
    except BadFilter as error:
        raise Http404(str(error)) from None


def _review_url(image_id: int, filters: QueueFilters) -> str:
    query = filters.as_query()
    url = reverse("regions:review_image", args=[image_id])
    return f"{url}?{urlencode(query)}" if query else url


def _queue_url(dataset: Dataset, filters: QueueFilters, **extra: str) -> str:
    query = filters.as_query() | extra
    url = reverse("regions:queue", args=[dataset.name])
    return f"{url}?{urlencode(query)}" if query else url


def _float(value: str | None, name: str) -> float:
    try:
        return float(value or "")
    except ValueError:
        raise BadInput(f"{name} must be a number") from None


def _changes_response(
    request: HtmxRequest,
    changed: Changed,
    *,
    undo: bool = False,
    counts: bool = True,
    nothing: bool = False,
    marked: Image | None = None,
) -> HttpResponse:
    """The fragments that changed (rows and boxes, out of band) and the image's counts.

    ``counts=False`` leaves the counts out (and their query) for edits that cannot move them:
    captions and boxes. ``HX-Trigger: fgam:changed`` tells the page what changed; the undo
    stack itself lives on the server (``UndoStep``), so nothing here needs keeping.
    ``marked`` is the image when its exhaustive-review mark changed: its state is redrawn.
    """
    if not request.htmx:
        return HttpResponseRedirect(
            request.headers.get("Referer") or _review_url(changed.image_id, QueueFilters())
        )
    _decorate(request, changed.regions, oob=True)
    _decorate(request, changed.added)
    context = {
        "regions": changed.regions,
        "added": changed.added,
        "removed": changed.removed,
        "counts": selectors.image_status_counts(changed.image_id) if counts else None,
        "marked": marked,
        "oob": True,
    }
    response = render(request, f"{TEMPLATE}#changes", context)
    payload = {
        "changes": changed.changes,
        "undo": undo,
        "nothing": nothing,
        "regions": [r.pk for r in changed.regions],
        "added": [r.pk for r in changed.added],
        "removed": changed.removed,
        "reviewed": None if marked is None else marked.exhaustively_reviewed_at is not None,
    }
    response["HX-Trigger"] = json.dumps({"fgam:changed": payload})
    return response


def _conflict_response(
    request: HtmxRequest, region_id: int, conflict: RegionConflict, mine: dict[str, str]
) -> HttpResponse:
    """409 with the other person's version beside the annotator's, to keep one or the other."""
    current = Region.objects.select_related("updated_by").filter(pk=region_id).first()
    rows = []
    if current is not None:
        action = mine.get("action", "")
        if action in STATUS_ACTIONS:
            rows.append(("status", current.status, STATUS_ACTIONS[action]))
        elif action == "edit":
            rows.append(("caption", current.caption, mine.get("caption", "")))
            if "phrase" in mine and mine["phrase"].strip() != current.phrase:
                rows.append(("phrase", current.phrase, mine["phrase"]))
        elif action == "box":
            mine_box = [float(mine.get(k) or 0) for k in ("x0", "y0", "x1", "y1")]
            box = ", ".join(svg_number(v) for v in mine_box)
            rows.append(("box", ", ".join(svg_number(v) for v in current.box), box))
    context = {
        "current": current,
        "mine": mine,
        "rows": rows,
        "can_keep_mine": bool(rows),
        "region_id": region_id,
        "oob": True,
    }
    response = render(request, f"{TEMPLATE}#conflict", context, status=409)
    if request.htmx:
        response = reswap(retarget(response, "#conflict"), "innerHTML")
    return response


def _bad_input_response(request: HtmxRequest, message: str) -> HttpResponse:
    response = render(request, f"{TEMPLATE}#notice", {"message": message}, status=422)
    if request.htmx:
        response = reswap(retarget(response, "#notice"), "innerHTML")
    return response


# --- The queue ----------------------------------------------------------------------------------


@allow("regions", READ)
@require_GET
@vary_on_htmx
def review_index(request: HtmxRequest) -> HttpResponse:
    """Datasets with their pending regions, each with a link to its review queue."""
    context = {"datasets": selectors.datasets_with_pending(_datasets(request))}
    return render(request, "regions/queue.html", context)


@allow("regions", READ)
@require_GET
@vary_on_htmx
def queue(request: HtmxRequest, name: str) -> HttpResponse:
    """The filters of a dataset's queue, what they match, and "Start reviewing"."""
    dataset = get_object_or_404(_datasets(request), name=name)
    filters = _filters(request.GET)
    matching = selectors.queue_matching(dataset.pk, filters)
    runs = list(
        Run.objects.filter(dataset=dataset, kind=Run.Kind.PSEUDO_LABEL)
        .order_by("-pk")
        .only("pk", "model_id", "parameters")[:50]
    )
    context = {
        "dataset": dataset,
        "filters": filters,
        "matching": matching,
        "runs": runs,
        "origins": Region.Origin.values,
        "empty": request.GET.get("empty") == "1",
        "my_lease": Lease.objects.filter(
            dataset=dataset, user=request.user, expires_at__gt=timezone.now()
        ).first(),
    }
    return render(request, "regions/queue.html", context)


@allow("regions", WRITE)
@require_POST
def start(request: HtmxRequest, name: str) -> HttpResponse:
    """Lease the next matching image to this annotator and open it."""
    dataset = get_object_or_404(_datasets(request), name=name)
    filters = _filters(request.POST)
    image_id = services.claim_next_image(dataset_id=dataset.pk, user=request.user, filters=filters)
    if image_id is None:
        return HttpResponseRedirect(_queue_url(dataset, filters, empty="1"))
    return HttpResponseRedirect(_review_url(image_id, filters))


@allow("regions", WRITE)
@require_POST
def next_image(request: HtmxRequest, pk: int) -> HttpResponse:
    """Give this image back and lease the next one (skip and next are the same move)."""
    image = get_object_or_404(_images(request).only("pk", "dataset_id"), pk=pk)
    return HttpResponseRedirect(_next_url(request, image, _filters(request.POST)))


def _next_url(request: HtmxRequest, image: Image, filters: QueueFilters, **extra: str) -> str:
    """Lease the next image after ``image`` and return its page (or the empty queue's)."""
    # Claiming gives back the user's other leases in the dataset, this image's among them,
    # so only an empty queue needs the explicit release (one commit fewer per "next").
    image_id = services.claim_next_image(
        dataset_id=image.dataset_id, user=request.user, filters=filters, exclude=[image.pk]
    )
    if image_id is None:
        services.release_lease(image_id=image.pk, user=request.user)
        return _queue_url(image.dataset, filters, empty="1", **extra)
    url = _review_url(image_id, filters)
    return f"{url}{'&' if '?' in url else '?'}{urlencode(extra)}" if extra else url


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def review_mark(request: HtmxRequest, pk: int) -> HttpResponse:
    """Mark the image exhaustively reviewed (``reviewed=1``) or clear it (``reviewed=0``), as
    one step of the undo stack; with ``next=1`` then go on to the next image, whose page says
    which image was marked (``?marked=``) so it can be reopened and undone."""
    image = get_object_or_404(_images(request).only("pk", "dataset_id"), pk=pk)
    reviewed = request.POST.get("reviewed", "1") == "1"
    try:
        review_marks.mark_image(image_id=image.pk, reviewed=reviewed, user=request.user)
    except review_marks.StillPending as error:
        return _bad_input_response(request, str(error))
    if request.POST.get("next") == "1":
        extra = {"marked": str(image.pk)} if reviewed else {}
        url = _next_url(request, image, _filters(request.POST), **extra)
        return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)
    services.renew_lease(image_id=image.pk, user=request.user)
    marked = Image.objects.select_related("exhaustively_reviewed_by").get(pk=image.pk)
    return _changes_response(request, Changed(image_id=image.pk), counts=False, marked=marked)


# --- The review page ----------------------------------------------------------------------------


@allow("regions", READ)
@require_GET
@vary_on_htmx
def review_image(request: HtmxRequest, pk: int) -> HttpResponse:
    """One image, large, with every region as a box and a row; a fixed number of queries."""
    # The lease rides along with the image, and the counts with the regions (a window over
    # the image's rows, taken before the LIMIT): two queries fewer than asking for each.
    image = get_object_or_404(
        _images(request).select_related("dataset", "lease__user", "exhaustively_reviewed_by"),
        pk=pk,
    )
    filters = _filters(request.GET)
    counts, regions = selectors.review_page_regions(image.pk, REGION_LIMIT)
    _decorate(request, regions)
    rows_html = markup.join([r.row_html for r in regions])
    boxes_html = markup.join([r.box_html for r in regions])
    lease = getattr(image, "lease", None)
    now = timezone.now()
    context = {
        "image": image,
        "dataset": image.dataset,
        "regions": regions,
        "rows_html": rows_html,
        "boxes_html": boxes_html,
        "counts": counts,
        "filters": filters,
        "filter_fields": filters.as_query(),
        "lease": lease if lease and lease.expires_at > now else None,
        "lease_is_mine": bool(lease and lease.user_id == request.user.pk),
        "has_file": bool(image.storage_path or image.uri.startswith(("http://", "https://"))),
        "queue_url": _queue_url(image.dataset, filters),
        # The image whose exhaustive-review state is drawn (the same partial as after a mark).
        "marked": image,
        "just_marked": parse_marked(request.GET.get("marked")),
    }
    return render(request, TEMPLATE, context)


def parse_marked(value: str | None) -> int | None:
    """The id in ``?marked=`` (the image just marked before this one), if it is one."""
    return int(value) if value and value.isdigit() else None


@allow("regions", READ)
@require_GET
@vary_on_htmx
def region_fragment(request: HtmxRequest, pk: int) -> HttpResponse:
    """The region as it is now: "take theirs" after a conflict swaps this in."""
    region = get_object_or_404(_regions(request), pk=pk)
    if not request.htmx:
        return HttpResponseRedirect(_review_url(region.image_id, QueueFilters()))
    return _changes_response(request, Changed(image_id=region.image_id, regions=[region]))


def _edit(request: HtmxRequest, region_id: int, fields: dict[str, Any]) -> HttpResponse:
    """Write one action on a region (``review_actions.edit``) and answer with what changed."""
    mine = {k: v for k, v in request.POST.items() if k != "csrfmiddlewaretoken"}
    try:
        version = parse_int(request.POST.get("version"), "version")
        changed = review_actions.edit(
            region_id=region_id, expected_version=version, changes=fields, user=request.user
        )
    except RegionConflict as conflict:
        return _conflict_response(request, region_id, conflict, mine)
    except (BoxError, BadInput, ValueError) as error:
        return _bad_input_response(request, str(error))
    return _changes_response(request, changed, counts="status" in fields)


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def region_action(request: HtmxRequest, pk: int) -> HttpResponse:
    """Accept, reject, rewrite (``edit``: caption and phrase) or move (``box``) one region."""
    get_object_or_404(_regions(request).only("pk"), pk=pk)
    action = request.POST.get("action", "")
    try:
        if action in STATUS_ACTIONS:
            fields = {"status": STATUS_ACTIONS[action]}
        elif action == "edit":
            fields = {"caption": request.POST.get("caption", "").strip()}
            if "phrase" in request.POST:
                fields["phrase"] = request.POST["phrase"].strip()[:512]
        elif action == "box":
            fields = {"box": [_float(request.POST.get(k), k) for k in ("x0", "y0", "x1", "y1")]}
        else:
            raise BadInput(f"unknown action {action!r}")
    except BadInput as error:
        return _bad_input_response(request, str(error))
    return _edit(request, pk, fields)


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def region_create(request: HtmxRequest, pk: int) -> HttpResponse:
    """A box the detector missed, drawn by the annotator (origin human)."""
    image = get_object_or_404(_images(request), pk=pk)
    try:
        box = [_float(request.POST.get(k), k) for k in ("x0", "y0", "x1", "y1")]
        changed = review_actions.draw(
            image=image,
            box=box,
            phrase=request.POST.get("phrase", "").strip()[:512],
            caption=request.POST.get("caption", "").strip(),
            user=request.user,
        )
    except (BoxError, BadInput) as error:
        return _bad_input_response(request, str(error))
    return _changes_response(request, changed)


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def region_delete(request: HtmxRequest, pk: int) -> HttpResponse:
    """Delete a human-drawn region (the others are rejected instead)."""
    region = get_object_or_404(_regions(request).only("pk", "image_id"), pk=pk)
    try:
        version = parse_int(request.POST.get("version"), "version")
        changed = review_actions.delete(region=region, expected_version=version, user=request.user)
    except RegionConflict as conflict:
        return _conflict_response(request, pk, conflict, {"action": "delete"})
    except (BadInput, ValueError) as error:
        return _bad_input_response(request, str(error))
    return _changes_response(request, changed)


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def accept_all(request: HtmxRequest, pk: int) -> HttpResponse:
    """Accept every region of the image that is still pending."""
    image = get_object_or_404(_images(request).only("pk"), pk=pk)
    return _changes_response(
        request, review_actions.accept_all(image_id=image.pk, user=request.user)
    )


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def undo(request: HtmxRequest, pk: int) -> HttpResponse:
    """Ctrl+Z: the newest open step of the annotator's undo stack, or exactly the ``change``
    ids posted (see ``review_actions.undo``); a region someone changed since gets 409."""
    image = get_object_or_404(_images(request), pk=pk)
    try:
        values = ",".join(request.POST.getlist("change")).split(",")
        ids = sorted({parse_int(v, "change") for v in values if v.strip()}, reverse=True)
    except BadInput as error:
        return _bad_input_response(request, str(error))
    done = review_actions.undo(image=image, user=request.user, change_ids=ids)
    if done.conflict:
        region_id, conflict = done.conflict
        return _conflict_response(request, region_id, conflict, {"action": "undo"})
    if done.error:
        return _bad_input_response(request, done.error)
    changed = Changed(
        image_id=image.pk, regions=selectors.regions_by_id(r.pk for r in done.regions),
        added=done.added, removed=done.removed, changes=done.made,
    )  # fmt: skip
    marked = None
    if done.mark_reverted:
        marked = Image.objects.select_related("exhaustively_reviewed_by").get(pk=image.pk)
    return _changes_response(request, changed, undo=True, nothing=done.nothing, marked=marked)


# --- History ------------------------------------------------------------------------------------

SHOWN_FIELDS = ("status", "caption", "phrase", "box", "flagged")


@allow("regions", READ)
@require_GET
@vary_on_htmx
def region_history(request: HtmxRequest, pk: int) -> HttpResponse:
    """Who changed the region, when, and what; each version can be restored."""
    region = _regions(request).filter(pk=pk).first()
    if region is None and Region.objects.filter(pk=pk).exists():
        raise Http404("no such region")
    changes = list(
        RegionChange.objects.filter(region_id=pk).select_related("user", "run").order_by("-pk")
    )
    if region is None and not changes:
        raise Http404("no such region")
    for change in changes:
        before, after = change.before or {}, change.after or {}
        change.diff = [
            (name, before.get(name), after.get(name))
            for name in SHOWN_FIELDS
            if before.get(name) != after.get(name)
        ]
    context = {"region": region, "changes": changes, "region_id": pk}
    name = f"{TEMPLATE}#history" if request.htmx else "regions/history.html"
    return render(request, name, context)


@allow("regions", WRITE)
@require_POST
@vary_on_htmx
def restore(request: HtmxRequest, change_id: int) -> HttpResponse:
    """Bring the region back to the state after an earlier change, recorded as a new change."""
    change = get_object_or_404(RegionChange, pk=change_id)
    region = get_object_or_404(_regions(request).only("pk", "image_id"), pk=change.region_id)
    try:
        version = parse_int(request.POST.get("version"), "version")
        changed = review_actions.restore(
            change_id=change_id, image_id=region.image_id, expected_version=version,
            user=request.user,
        )  # fmt: skip
    except RegionConflict as conflict:
        return _conflict_response(request, region.pk, conflict, {"action": "restore"})
    except (BoxError, BadInput, ValueError) as error:
        return _bad_input_response(request, str(error))
    return _changes_response(request, changed)


# --- Dataset progress ---------------------------------------------------------------------------

PROGRESS_HOURS = 24


@allow("regions", READ)
@require_GET
@vary_on_htmx
def progress(request: HtmxRequest, name: str) -> HttpResponse:
    """Counts by status, origin and flag; reviews per annotator per hour; reviews over time.

    Three aggregate queries whatever the data size. The page polls itself (htmx, every 10 s)
    and gets the ``stats`` fragment back.
    """
    dataset = get_object_or_404(_datasets(request), name=name)
    counts = selectors.dataset_counts(dataset)
    since = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=PROGRESS_HOURS - 1
    )
    per_user, by_hour = selectors.reviews_since(dataset, since)
    hours = [since + timedelta(hours=h) for h in range(PROGRESS_HOURS)]
    series = [(hour, by_hour.get(hour, 0)) for hour in hours]
    peak = max((n for _, n in series), default=0) or 1
    total = counts["total"] or 1
    context = {
        "dataset": dataset,
        "counts": counts,
        "status_rows": [
            (s, counts[f"status_{s}"], 100 * counts[f"status_{s}"] / total) for s in STATUSES
        ],
        "origin_rows": [(o, counts[f"origin_{o}"]) for o in Region.Origin.values],
        "per_user": per_user,
        "bars": [
            {"hour": hour, "n": n, "x": i * 10, "height": h, "y": 100 - h}
            for i, (hour, n) in enumerate(series)
            for h in [round(100 * n / peak, 1)]
        ],
        "peak": peak,
        "now": timezone.now(),
    }
    name = "regions/progress.html#stats" if request.htmx else "regions/progress.html"
    return render(request, name, context)
