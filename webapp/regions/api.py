"""REST API for regions: lists for scripts and exports to page through, and review edits.

``PATCH /api/regions/ID/`` takes the version the client read, in an ``If-Match`` header (the
``ETag`` a GET answers with) or a ``version`` field, and goes through
``webapp.regions.services.update_region``: a stale version answers 409 with the current state,
and every change keeps its history. Raters get 403 here as on the review pages.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from training.geometry import BoxError
from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.core.policy import scope
from webapp.regions import services
from webapp.regions.models import Region

REGION_FIELDS = [
    "id",
    "image",
    "box",
    "phrase",
    "caption",
    "score",
    "origin",
    "status",
    "version",
    "flagged",
    "run",
]


class RegionSerializer(serializers.ModelSerializer):
    box = serializers.ListField(
        child=serializers.FloatField(),
        min_length=4,
        max_length=4,
        read_only=True,
        help_text="Pixel [x0, y0, x1, y1], origin top-left (docs/formats.md).",
    )

    class Meta:
        model = Region
        fields = REGION_FIELDS


class RegionFilter(serializers.Serializer):
    dataset = id_param("Only regions on images of this dataset (its id).")
    image = id_param("Only regions of this image (its id).")
    status = serializers.ChoiceField(choices=Region.Status.choices, required=False)
    origin = serializers.ChoiceField(choices=Region.Origin.choices, required=False)


class RegionEditSerializer(serializers.Serializer):
    """What a review edit may change; every field optional. Validates only, writes nothing."""

    version = serializers.IntegerField(
        required=False, min_value=1, help_text="The version read; or send If-Match."
    )
    status = serializers.ChoiceField(choices=Region.Status.choices, required=False)
    caption = serializers.CharField(required=False, allow_blank=True)
    phrase = serializers.CharField(required=False, allow_blank=True, max_length=512)
    box = serializers.ListField(
        child=serializers.FloatField(), min_length=4, max_length=4, required=False,
        help_text="Pixel [x0, y0, x1, y1] inside the image.",
    )  # fmt: skip


def _etag(region: Region) -> str:
    return f'"{region.version}"'


@extend_schema_view(list=list_schema(RegionSerializer, RegionFilter))
class RegionViewSet(FilteredListMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Regions, filtered by ``dataset``, ``image``, ``status`` and ``origin``; PATCH edits one."""

    http_method_names = ["get", "patch", "head", "options"]
    policy_resource = "regions"
    serializer_class = RegionSerializer
    filter_serializer_class = RegionFilter
    # A region knows its dataset only through its image: one join, on an indexed key.
    filter_lookups = {"dataset": "image__dataset_id", "image": "image_id"}

    def get_queryset(self) -> QuerySet[Region]:
        # ``box`` reads x0..y1; ``image`` and ``run`` are sent as ids, so no join is needed.
        return scope(Region.objects.all(), self.request.user, "image__dataset").only(
            "id", "image_id", "x0", "y0", "x1", "y1", "phrase", "caption", "score",
            "origin", "status", "version", "flagged", "run_id",
        )  # fmt: skip

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        response = super().retrieve(request, *args, **kwargs)
        response["ETag"] = f'"{response.data["version"]}"'
        return response

    @extend_schema(
        request=RegionEditSerializer,
        responses={
            200: RegionSerializer,
            400: OpenApiResponse(description="A bad field or a missing version."),
            409: OpenApiResponse(
                RegionSerializer, description="Stale version: the region as it is now."
            ),
        },
    )
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        region = self.get_object()
        edit = RegionEditSerializer(data=request.data)
        edit.is_valid(raise_exception=True)
        changes = dict(edit.validated_data)
        version = changes.pop("version", None)
        if_match = request.headers.get("If-Match", "").strip().removeprefix("W/").strip('"')
        if version is None and if_match:
            if not if_match.isdigit():
                return Response({"If-Match": ["must be the region's version"]}, status=400)
            version = int(if_match)
        if version is None:
            return Response({"version": ["send the version read, or an If-Match header"]}, 400)
        try:
            updated = services.update_region(
                region_id=region.pk, expected_version=version, changes=changes, user=request.user
            )
        except services.RegionConflict:
            current = self.get_queryset().filter(pk=region.pk).first()
            if current is None:
                return Response({"detail": "the region no longer exists"}, status=409)
            data = RegionSerializer(current).data
            return Response(data, status=status.HTTP_409_CONFLICT, headers={"ETag": _etag(current)})
        except (BoxError, ValueError) as error:
            return Response({"detail": str(error)}, status=400)
        services.apply_lint(image_id=updated.image_id, region_ids=[updated.pk], changed=changes)
        updated.refresh_from_db()
        return Response(RegionSerializer(updated).data, headers={"ETag": _etag(updated)})
