"""REST API for probe sets.

``GET /api/probe-sets/`` lists ready sets (``?status=`` shows others; ``?dataset=``,
``?kind=``, ``?split=`` filter), ``GET /api/probe-sets/{id}/`` has the manifest, and
``POST /api/probe-sets/`` (curators) records a set and hands it to the build task: it answers
202 with the row in status ``building``; poll the detail for ``ready`` or ``failed`` (with the
error, e.g. a leakage refusal).
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.core.policy import scope_versions
from webapp.probes.building import MAX_IMAGES, MAX_PER_IMAGE, ProbeBuildError, start_probe_set
from webapp.probes.models import ProbeSet


class ProbeSetSerializer(serializers.ModelSerializer):
    datasets = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    progress = serializers.SerializerMethodField(help_text="While built: phase, done, total.")

    def get_progress(self, probe_set: ProbeSet) -> dict:
        return {
            "phase": probe_set.progress_phase,
            "done": probe_set.progress_done,
            "total": probe_set.progress_total,
        }

    class Meta:
        model = ProbeSet
        fields = [
            "id",
            "set_id",
            "kind",
            "split",
            "seed",
            "params",
            "status",
            "datasets",
            "allow_seen",
            "counts",
            "content_sha256",
            "path",
            "error",
            "progress",
            "created_at",
            "finished_at",
        ]


class ProbeSetDetailSerializer(ProbeSetSerializer):
    class Meta(ProbeSetSerializer.Meta):
        fields = [*ProbeSetSerializer.Meta.fields, "manifest"]


class ProbeSetFilter(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=ProbeSet.Status.choices, required=False, help_text="Default: ready."
    )
    dataset = id_param("Only probe sets built over this dataset (its id).")
    kind = serializers.ChoiceField(choices=ProbeSet.Kind.choices, required=False)
    split = serializers.ChoiceField(choices=ProbeSet.Split.choices, required=False)


class ProbeSetCreateSerializer(serializers.Serializer):
    """A probe set to build. Validates and shapes; the service checks names and rules."""

    datasets = serializers.ListField(
        child=serializers.CharField(max_length=100), min_length=1, max_length=100
    )
    kind = serializers.ChoiceField(choices=ProbeSet.Kind.choices)
    split = serializers.ChoiceField(
        choices=ProbeSet.Split.choices, required=False, allow_null=True, default=None,
        help_text="POPE: random (default), popular or adversarial; spatial: spatial.",
    )  # fmt: skip
    images = serializers.IntegerField(min_value=1, max_value=MAX_IMAGES, default=500)
    per_image = serializers.IntegerField(min_value=1, max_value=MAX_PER_IMAGE, default=3)
    seed = serializers.IntegerField(default=0, min_value=-(2**62), max_value=2**62)
    allow_seen = serializers.BooleanField(default=False)
    reference = serializers.BooleanField(default=False)


@extend_schema_view(
    list=list_schema(ProbeSetSerializer, ProbeSetFilter),
    retrieve=extend_schema(responses=ProbeSetDetailSerializer),
    create=extend_schema(
        request=ProbeSetCreateSerializer,
        responses={202: ProbeSetDetailSerializer, 400: OpenApiResponse(description="Invalid.")},
    ),
)
class ProbeSetViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Probe sets (ready ones unless ``?status=``); curators build them."""

    policy_resource = "probe-sets"
    filter_serializer_class = ProbeSetFilter
    filter_lookups = {"dataset": "datasets"}

    def get_queryset(self) -> QuerySet[ProbeSet]:
        queryset = scope_versions(ProbeSet.objects.all(), self.request.user)
        queryset = queryset.prefetch_related("datasets").order_by("-id")
        if self.action == "list":
            if not self.request.query_params.get("status"):
                queryset = queryset.filter(status=ProbeSet.Status.READY)
            return queryset.defer("manifest")
        return queryset

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.action == "create":
            return ProbeSetCreateSerializer
        return ProbeSetSerializer if self.action == "list" else ProbeSetDetailSerializer

    def create(self, request: Request) -> Response:
        serializer = ProbeSetCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            probe_set = start_probe_set(**serializer.validated_data, created_by=request.user)
        except ProbeBuildError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        probe_set.refresh_from_db()
        return Response(ProbeSetDetailSerializer(probe_set).data, status=status.HTTP_202_ACCEPTED)


ROUTES = [("probe-sets", ProbeSetViewSet, "probe-set")]
