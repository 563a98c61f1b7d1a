"""REST API for runs: what was done, with which model and parameters, and how far it got."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.jobs.models import Run


class RunSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True, help_text="(done + failed) / total, 0..1.")
    duration = serializers.FloatField(
        source="duration_s", read_only=True, allow_null=True, help_text="Seconds, once finished."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "kind",
            "dataset",
            "model_id",
            "parameters",
            "status",
            "total",
            "done",
            "failed",
            "progress",
            "summary",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
        ]


class RunDetailSerializer(RunSerializer):
    """One run adds its per-record errors, which can be long, so lists leave them out."""

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "errors"]


class RunFilter(serializers.Serializer):
    dataset = id_param("Only runs on this dataset (its id).")
    kind = serializers.ChoiceField(choices=Run.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Run.Status.choices, required=False)


@extend_schema_view(
    list=list_schema(RunSerializer, RunFilter),
    retrieve=extend_schema(responses=RunDetailSerializer),
)
class RunViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Runs, filtered by ``dataset``, ``kind`` and ``status``."""

    filter_serializer_class = RunFilter
    filter_lookups = {"dataset": "dataset_id"}

    def get_queryset(self) -> QuerySet[Run]:
        queryset = Run.objects.all()
        return queryset.defer("errors") if self.action == "list" else queryset

    def get_serializer_class(self) -> type[RunSerializer]:
        return RunDetailSerializer if self.action == "retrieve" else RunSerializer
