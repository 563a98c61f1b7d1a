"""Browsing the catalog: datasets, the image grid and the image page with its regions.

Every page runs a fixed number of SQL queries whatever the data size: counts come from
aggregates and correlated subqueries, lists use keyset pagination on the primary key. htmx
requests get a fragment of the same template (``{% partialdef %}``), plain requests the page.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db.models import Count, Q
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.cache import get_conditional_response, patch_cache_control
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.catalog.queries import count_of
from webapp.catalog.services import set_dataset_access
from webapp.catalog.thumbnails import NoStoredBytes, ensure_thumbnail
from webapp.core.http import (
    BadInput,
    HtmxRequest,
    parse_int,
    svg_rect,
    vary_on_htmx,
    wants_fragment,
)
from webapp.core.policy import READ, WRITE, allow, is_curator, scope
from webapp.core.roles import ANNOTATOR
from webapp.regions.models import Region
from webapp.regions.provenance import attach_provenance
from workers.imaging import ImageProblem

GRID_PAGE_SIZE = 48
# The image page lists at most this many regions; filters narrow it down.
REGION_LIMIT = 1000
# Thumbnails and originals never change for an image id (its sha256 is its identity).
IMAGE_MAX_AGE = 60 * 60 * 24 * 30
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
GRID_FIELDS = ("pk", "sha256", "width", "height", "file_name", "captions", "split")
GRID_FIELDS += ("storage_path", "exhaustively_reviewed_at")
STATUS_CHOICES = [s.value for s in Region.Status]
ORIGIN_CHOICES = [o.value for o in Region.Origin]


def _render(
    request: HtmxRequest, template: str, partial: str, context: dict[str, Any]
) -> HttpResponse:
    name = f"{template}#{partial}" if wants_fragment(request) else template
    return render(request, name, context)


# --- Datasets ---------------------------------------------------------------------------------


@allow("datasets", READ, refused_redirect="evaluation:index")
@require_GET
@vary_on_htmx
def dataset_list(request: HtmxRequest) -> HttpResponse:
    """Every dataset with its counts, in two queries whatever the number of datasets."""
    datasets = list(
        scope(Dataset.objects.order_by("name"), request.user, "").annotate(
            image_count=count_of(Image.objects.all(), "dataset"),
            question_count=count_of(QuestionItem.objects.all(), "image__dataset"),
        )
    )
    region_counts = {
        row.pop("image__dataset"): row
        for row in Region.objects.filter(image__dataset__in=[d.pk for d in datasets])
        .order_by()
        .values("image__dataset")
        .annotate(
            total=Count("pk"),
            **{s: Count("pk", filter=Q(status=s)) for s in STATUS_CHOICES},
        )
    }
    empty = {"total": 0, **dict.fromkeys(STATUS_CHOICES, 0)}
    for dataset in datasets:
        counts = region_counts.get(dataset.pk, empty)
        dataset.region_counts = counts
        total = counts["total"] or 1
        dataset.status_shares = [
            (s, counts[s], round(100 * counts[s] / total, 2)) for s in STATUS_CHOICES
        ]
    return _render(request, "catalog/dataset_list.html", "datasets", {"datasets": datasets})


# --- The image grid ---------------------------------------------------------------------------


@allow("datasets", READ)
@require_GET
@vary_on_htmx
def image_grid(request: HtmxRequest, name: str) -> HttpResponse:
    """Thumbnails of a dataset, ``GRID_PAGE_SIZE`` at a time after ``?after=<id>``."""
    dataset = get_object_or_404(scope(Dataset.objects.all(), request.user, ""), name=name)
    split = request.GET.get("split")
    if split is not None and split not in Image.Split.values:
        raise Http404("unknown split")
    after_field = request.GET.get("after", "")
    try:
        after = parse_int(after_field, "after", minimum=0) if after_field else None
    except BadInput as error:
        raise Http404(str(error)) from None

    images = Image.objects.filter(dataset=dataset)
    if split is not None:
        images = images.filter(split=split)
    if after is not None:
        images = images.filter(pk__gt=after)
    page = list(
        images.order_by("pk")
        .only(*GRID_FIELDS)
        .annotate(region_count=count_of(Region.objects.all(), "image"))[: GRID_PAGE_SIZE + 1]
    )
    next_url = None
    if len(page) > GRID_PAGE_SIZE:
        page = page[:GRID_PAGE_SIZE]
        query = {"after": page[-1].pk} | ({"split": split} if split is not None else {})
        next_url = f"{request.path}?{urlencode(query)}"

    splits = [("all", None)] + [(value, value) for value in Image.Split.values if value]
    context = {
        "dataset": dataset,
        "can_start_runs": is_curator(request.user),
        "images": page,
        "next_url": next_url,
        "split": split,
        "split_links": [
            (
                label,
                request.path + (f"?{urlencode({'split': value})}" if value is not None else ""),
                value == split,
            )
            for label, value in splits
        ],
    }
    if context["can_start_runs"] and not wants_fragment(request):
        context["access"] = _access_context(dataset)
    return _render(request, "catalog/image_grid.html", "grid_page", context)


def _access_context(dataset: Dataset) -> dict[str, Any]:
    """The curator's access form: whether the dataset is restricted, and who is listed."""
    listed = set(dataset.access.values_list("user_id", flat=True))
    annotators = get_user_model().objects.filter(groups__name=ANNOTATOR).order_by("username")
    return {
        "restricted": dataset.restricted,
        "annotators": [(user, user.pk in listed) for user in annotators.distinct()],
    }


@allow("datasets", WRITE)
@require_POST
def dataset_access(request: HtmxRequest, name: str) -> HttpResponse:
    """Restrict the dataset to the annotators ticked, or open it to every annotator again."""
    dataset = get_object_or_404(Dataset, name=name)
    try:
        ids = [
            parse_int(value, "annotators", minimum=1)
            for value in request.POST.getlist("annotators")
        ]
        set_dataset_access(
            dataset=dataset,
            restricted=request.POST.get("restricted") == "on",
            annotators=get_user_model().objects.filter(pk__in=ids),
            by=request.user,
        )
    except (BadInput, ValueError) as error:
        messages.error(request, f"Access not changed: {error}")
    else:
        messages.success(request, "Access saved.")
    return HttpResponseRedirect(reverse("catalog:image_grid", args=[dataset.name]))


# --- The image page ---------------------------------------------------------------------------


def _filter_links(
    request: HttpRequest, key: str, values: list[str], counts: dict[str, int], current: dict
) -> list[dict]:
    links = []
    for value in [None, *values]:
        query = {k: v for k, v in current.items() if v and k != key}
        if value:
            query[key] = value
        links.append(
            {
                "label": value or "all",
                "count": counts[value] if value else counts["total"],
                "url": request.path + (f"?{urlencode(query)}" if query else ""),
                "active": current.get(key) == value,
            }
        )
    return links


def _images(request: HttpRequest):
    """The images the user may open: none of a dataset restricted to other annotators."""
    return scope(Image.objects.all(), request.user, "dataset")


@allow("images", READ)
@require_GET
@vary_on_htmx
def image_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    """One image, its regions drawn over it and listed, its captions, metadata and questions."""
    image = get_object_or_404(_images(request).select_related("dataset"), pk=pk)
    status = request.GET.get("status") or None
    origin = request.GET.get("origin") or None
    if status is not None and status not in STATUS_CHOICES:
        raise Http404("unknown status")
    if origin is not None and origin not in ORIGIN_CHOICES:
        raise Http404("unknown origin")

    counts = Region.objects.filter(image=image).aggregate(
        total=Count("pk"),
        **{v: Count("pk", filter=Q(status=v)) for v in STATUS_CHOICES},
        **{v: Count("pk", filter=Q(origin=v)) for v in ORIGIN_CHOICES},
    )
    regions_qs = Region.objects.filter(image=image).order_by("pk")
    if status:
        regions_qs = regions_qs.filter(status=status)
    if origin:
        regions_qs = regions_qs.filter(origin=origin)
    regions = list(regions_qs[: REGION_LIMIT + 1])
    truncated = len(regions) > REGION_LIMIT
    regions = regions[:REGION_LIMIT]
    attach_provenance(regions)
    for region in regions:
        region.svg = svg_rect(region.x0, region.y0, region.x1, region.y1)

    siblings = Image.objects.filter(dataset_id=image.dataset_id).values_list("pk", flat=True)
    current = {"status": status, "origin": origin}
    longer_side = max(image.width, image.height)
    context = {
        "image": image,
        "dataset": image.dataset,
        "regions": regions,
        "truncated": truncated,
        "region_limit": REGION_LIMIT,
        "counts": counts,
        "status_links": _filter_links(request, "status", STATUS_CHOICES, counts, current),
        "origin_links": _filter_links(request, "origin", ORIGIN_CHOICES, counts, current),
        "filtered": bool(status or origin),
        "questions": list(QuestionItem.objects.filter(image=image).order_by("pk")[:200]),
        "previous_id": siblings.filter(pk__lt=image.pk).order_by("-pk").first(),
        "next_id": siblings.filter(pk__gt=image.pk).order_by("pk").first(),
        "has_file": _has_viewable_file(image),
        # Label size and padding in image pixels, so labels look the same at any image size.
        "label_size": max(round(longer_side / 45, 1), 6),
        "label_pad": max(round(longer_side / 200, 1), 1),
    }
    return _render(request, "catalog/image_detail.html", "viewer", context)


def _remote_uri(image: Image) -> str | None:
    return image.uri if image.uri.startswith(("http://", "https://")) else None


def _has_viewable_file(image: Image) -> bool:
    return bool(image.storage_path or _remote_uri(image))


# --- Image bytes ------------------------------------------------------------------------------


def _etag(image: Image, kind: str) -> str:
    return f'"{image.sha256}-{kind}"'


def _serve_stored(name: str, content_type: str, *, filename: str = "") -> HttpResponseBase:
    """Stream a file from local storage, or send the browser to it on remote storage (S3)."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        return HttpResponseRedirect(default_storage.url(name))
    try:
        handle = open(path, "rb")  # noqa: SIM115 - FileResponse closes it
    except FileNotFoundError:
        raise NoStoredBytes(name) from None
    return FileResponse(handle, content_type=content_type, filename=filename)


def _cached(response: HttpResponseBase, etag: str) -> HttpResponseBase:
    if response.status_code == 200:
        response["ETag"] = etag
        patch_cache_control(response, private=True, max_age=IMAGE_MAX_AGE)
    return response


def _placeholder() -> HttpResponse:
    """Shown instead of a thumbnail that cannot be made; not cached, it may appear later."""
    response = HttpResponseRedirect(static("img/no-image.svg"))
    patch_cache_control(response, private=True, no_cache=True)
    return response


@allow("images", READ)
@require_GET
def image_thumb(request: HttpRequest, pk: int) -> HttpResponseBase:
    image = get_object_or_404(
        _images(request).only("pk", "sha256", "storage_path", "thumbnail_path"), pk=pk
    )
    etag = _etag(image, f"thumb{settings.FGAM_THUMBNAIL_SIZE}")
    not_modified = get_conditional_response(request, etag=etag)
    if not_modified is not None:
        return not_modified
    try:
        name = ensure_thumbnail(image)
        return _cached(_serve_stored(name, "image/jpeg"), etag)
    except (NoStoredBytes, ImageProblem):
        return _placeholder()


@allow("images", READ)
@require_GET
def image_file(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The original bytes, as stored; a reference-mode image with a URL redirects to it."""
    return image_file_response(request, get_object_or_404(_images(request), pk=pk))


def image_file_response(request: HttpRequest, image: Image) -> HttpResponseBase:
    """The answer with an image's bytes, for whichever route found the user may see it (an
    image id here; a rater's seat in ``evaluation``)."""
    if not image.storage_path:
        remote = _remote_uri(image)
        if remote is None:
            raise Http404("this image has no stored file")
        return HttpResponseRedirect(remote)
    etag = _etag(image, "file")
    not_modified = get_conditional_response(request, etag=etag)
    if not_modified is not None:
        return not_modified
    content_type = (
        CONTENT_TYPES.get(image.format)
        or mimetypes.guess_type(image.storage_path)[0]
        or "application/octet-stream"
    )
    filename = image.file_name.rsplit("/", 1)[-1] or image.storage_path.rsplit("/", 1)[-1]
    try:
        return _cached(_serve_stored(image.storage_path, content_type, filename=filename), etag)
    except NoStoredBytes:
        raise Http404("the stored file is missing") from None
