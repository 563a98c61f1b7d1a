"""REST API for regions: read-only lists for scripts and exports to page through.

Review writes go through ``webapp.regions.services`` (optimistic concurrency, history); the API
will expose them once the review workflow lands.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_view
from rest_framework import serializers, viewsets

from webapp.core.api import FilteredListMixin, id_param, list_schema
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
        help_text="Pixel [x0, y0, x1, y1], origin top-left (shared/FORMATS.md).",
    )

    class Meta:
        model = Region
        fields = REGION_FIELDS


class RegionFilter(serializers.Serializer):
    dataset = id_param("Only regions on images of this dataset (its id).")
    image = id_param("Only regions of this image (its id).")
    status = serializers.ChoiceField(choices=Region.Status.choices, required=False)
    origin = serializers.ChoiceField(choices=Region.Origin.choices, required=False)


@extend_schema_view(list=list_schema(RegionSerializer, RegionFilter))
class RegionViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Regions, filtered by ``dataset``, ``image``, ``status`` and ``origin``."""

    serializer_class = RegionSerializer
    filter_serializer_class = RegionFilter
    # A region knows its dataset only through its image: one join, on an indexed key.
    filter_lookups = {"dataset": "image__dataset_id", "image": "image_id"}

    def get_queryset(self) -> QuerySet[Region]:
        # ``box`` reads x0..y1; ``image`` and ``run`` are sent as ids, so no join is needed.
        return Region.objects.only(
            "id", "image_id", "x0", "y0", "x1", "y1", "phrase", "caption", "score",
            "origin", "status", "version", "flagged", "run_id",
        )  # fmt: skip
