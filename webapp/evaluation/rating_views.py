"""The rater's pages: open rounds, "start rating", and the blind rating page.

Nothing here reads a system: responses come through the seat's recorded ``order`` and are
shown as "Response 1..n", forms name slots, and a rater's page never shows another rater's
ratings. Saving is a plain form POST (htmx-free, so it works without JavaScript); the page's
module adds the keyboard (``static/js/evaluation.js``).
"""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import Http404, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.catalog.views import image_file_response
from webapp.core.http import HtmxRequest, vary_on_htmx
from webapp.core.policy import READ, READ_BLIND, WRITE, allow, allows, seats
from webapp.core.versioning import Conflict
from webapp.evaluation.assignment import (
    NotYours,
    RoundNotOpen,
    claim_next,
    progress,
    submit_ratings,
)
from webapp.evaluation.forms import parse_rating_form, slot_views
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Assignment, Round
from webapp.regions.models import Region


@allow("rounds", READ_BLIND)
@require_GET
@vary_on_htmx
def index(request: HtmxRequest) -> HttpResponse:
    """Curators: every round. Raters: the open rounds, with how much of each they have done."""
    curator = allows(request.user, "rounds", READ)
    rater = allows(request.user, "seats", READ)
    rounds = []
    if curator:
        rounds = list(
            Round.objects.annotate(
                n_items=Count("items", distinct=True),
                n_systems=Count("systems", distinct=True),
            ).order_by("-created_at")
        )
    rating = []
    if rater:
        rating = list(
            Round.objects.filter(status__in=[Round.Status.OPEN, Round.Status.CLOSED])
            .annotate(
                mine=Count(
                    "assignments",
                    filter=Q(assignments__rater=request.user, assignments__status="done"),
                )
            )
            .filter(Q(status=Round.Status.OPEN) | Q(mine__gt=0))
            .order_by("-opened_at")
        )
    context = {"rounds": rounds, "rating": rating, "is_curator": curator, "is_rater": rater}
    return render(request, "evaluation/index.html", context)


@allow("seats", READ)
@require_GET
@vary_on_htmx
def my_round(request: HtmxRequest, pk: int) -> HttpResponse:
    """A rater's page for one round: progress, start or continue, and their rated items."""
    round_ = get_object_or_404(Round.objects.exclude(status=Round.Status.DRAFT), pk=pk)
    mine = list(
        Assignment.objects.filter(round=round_, rater=request.user)
        .exclude(status=Assignment.Status.OPEN)
        .select_related("item")
        .order_by("claimed_at")
    )
    context = {
        "round": round_,
        "counts": progress(round_, request.user),
        "done": [a for a in mine if a.status == Assignment.Status.DONE],
        "pending": next((a for a in mine if a.status == Assignment.Status.PENDING), None),
        "finished": request.GET.get("finished") == "1",
    }
    return render(request, "evaluation/my_round.html", context)


@allow("seats", WRITE)
@require_POST
def next_item(request: HtmxRequest, pk: int) -> HttpResponse:
    """Claim the rater's next item (or return their pending one) and go to it."""
    round_ = get_object_or_404(Round, pk=pk)
    try:
        assignment = claim_next(round_, request.user)
    except RoundNotOpen:
        assignment = None
    if assignment is None:
        return HttpResponseRedirect(reverse("evaluation:my_round", args=[pk]) + "?finished=1")
    return HttpResponseRedirect(reverse("evaluation:rate", args=[assignment.pk]))


def _accepted_regions(image_id: int) -> list[dict]:
    regions = Region.objects.filter(image_id=image_id, status=Region.Status.ACCEPTED).order_by(
        "pk"
    )[:200]
    return [
        {
            "x": r.x0, "y": r.y0, "width": r.x1 - r.x0, "height": r.y1 - r.y0,
            "phrase": r.phrase,
        }
        for r in regions
    ]  # fmt: skip


def _rate_context(assignment: Assignment, request: HtmxRequest, posted=None) -> dict:
    round_ = assignment.round
    image = assignment.item.image
    counts = progress(round_, request.user)
    return {
        "assignment": assignment,
        "round": round_,
        "item": assignment.item,
        "image": image,
        "has_file": bool(image.storage_path or image.uri.startswith(("http://", "https://"))),
        "regions": _accepted_regions(image.pk),
        "slots": slot_views(assignment, posted),
        "criteria": round_.criteria,
        "counts": counts,
        "editable": round_.status == Round.Status.OPEN,
        "is_revision": assignment.status == Assignment.Status.DONE,
        "saved": request.GET.get("saved") == "1",
    }


@allow("seats")
@require_http_methods(["GET", "POST"])
@vary_on_htmx
def rate(request: HtmxRequest, pk: int) -> HttpResponse:
    """The rating page of one seat (the rater's own only); POST saves or revises it."""
    assignment = (
        seats(Assignment.objects.select_related("round", "item__image"), request.user)
        .filter(pk=pk)
        .first()
    )
    if assignment is None:
        # Another rater's seat, or this rater's lapsed lease handed to someone else: say so
        # (and nothing about who), rather than a bare 404, when the rater was saving.
        if request.method == "POST" and Assignment.objects.filter(pk=pk).exists():
            context = {"round": Assignment.objects.get(pk=pk).round}
            return render(request, "evaluation/lapsed.html", context, status=409)
        raise Http404("No such item of yours.")
    if request.method == "GET":
        return render(request, "evaluation/rate.html", _rate_context(assignment, request))
    first_time = assignment.status == Assignment.Status.PENDING
    inputs = parse_rating_form(request.POST, assignment.round, len(assignment.order))
    try:
        submit_ratings(assignment_id=assignment.pk, rater=request.user, inputs=inputs)
    except (NotYours, RoundNotOpen) as error:
        return _error(request, assignment, inputs, str(error), status=409)
    except Conflict:
        message = "These ratings were changed in another tab meanwhile; the page shows them now."
        assignment.refresh_from_db()
        return _error(request, assignment, None, message, status=409)
    except InputError as error:
        return _error(request, assignment, inputs, str(error), status=422)
    if first_time:
        return next_item(request, assignment.round_id)
    return HttpResponseRedirect(reverse("evaluation:rate", args=[assignment.pk]) + "?saved=1")


@allow("seats", READ)
@require_GET
def seat_image(request: HtmxRequest, pk: int) -> HttpResponseBase:
    """The image of the rater's own seat: raters reach images through seats, never by id."""
    assignment = get_object_or_404(
        seats(Assignment.objects.select_related("item__image"), request.user), pk=pk
    )
    return image_file_response(request, assignment.item.image)


def _error(request, assignment, inputs, message: str, *, status: int) -> HttpResponse:
    context = _rate_context(assignment, request, inputs) | {"error": message}
    return render(request, "evaluation/rate.html", context, status=status)
