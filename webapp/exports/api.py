"""REST API for dataset versions and training jobs.

``/api/versions/`` lists ready versions (``?status=`` shows others), ``POST`` cuts one
(curators), ``/api/versions/{id}/download/`` streams the whole version as one tar (or one file
with ``?path=``). ``/api/training-jobs/`` lists, starts (curators) and cancels jobs.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse, Http404, StreamingHttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.core.policy import scope_versions
from webapp.exports.download import tar_stream
from webapp.exports.models import DatasetVersion, TrainingJob
from webapp.exports.selection import ExportError
from webapp.exports.services import cut_version
from webapp.exports.storage import open_file, version_files
from webapp.exports.training_jobs import TrainingJobError, cancel_training_job, start_training_job


class VersionSerializer(serializers.ModelSerializer):
    datasets = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    derived_from = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="While cut: phase, rows written (regions, questions, trajectories), total."
    )

    def get_progress(self, version: DatasetVersion) -> dict:
        return {
            "phase": version.progress_phase,
            "done": version.progress_done,
            "total": version.progress_total,
            "percent": version.progress_percent,
        }

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "name",
            "status",
            "datasets",
            "filters",
            "reference",
            "holdout_fraction",
            "counts",
            "size_bytes",
            "content_sha256",
            "derived_from",
            "location",
            "error",
            "progress",
            "created_at",
            "finished_at",
        ]


class VersionDetailSerializer(VersionSerializer):
    jobs = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "manifest", "jobs"]


class VersionFilter(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=DatasetVersion.Status.choices, required=False, help_text="Default: ready."
    )
    dataset = id_param("Only versions that include this dataset (its id).")


class VersionCreateSerializer(serializers.Serializer):
    """A version to cut. Validates and shapes; the service checks names and filters."""

    datasets = serializers.ListField(
        child=serializers.CharField(max_length=100), min_length=1, max_length=100
    )
    filters = serializers.DictField(required=False, default=dict)
    reference = serializers.BooleanField(required=False, default=False)
    train_on_ready = serializers.DictField(
        required=False,
        default=dict,
        help_text='"Train on export": e.g. {"kind": "stage1", "config": {"max_steps": 100}}.',
    )


@extend_schema_view(
    list=list_schema(VersionSerializer, VersionFilter),
    retrieve=extend_schema(responses=VersionDetailSerializer),
    create=extend_schema(
        request=VersionCreateSerializer,
        responses={202: VersionDetailSerializer, 400: OpenApiResponse(description="Invalid.")},
    ),
)
class VersionViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Versions (ready ones unless ``?status=``) and their downloads; curators cut them."""

    policy_resource = "versions"
    filter_serializer_class = VersionFilter
    filter_lookups = {"dataset": "datasets"}

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        queryset = scope_versions(DatasetVersion.objects.all(), self.request.user)
        queryset = queryset.prefetch_related("datasets", "derived_from")
        if self.action == "list":
            if not self.request.query_params.get("status"):
                queryset = queryset.filter(status=DatasetVersion.Status.READY)
            return queryset.defer("manifest")
        return queryset.prefetch_related("jobs")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.action == "create":
            return VersionCreateSerializer
        return VersionSerializer if self.action == "list" else VersionDetailSerializer

    def create(self, request: Request) -> Response:
        serializer = VersionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            version = cut_version(
                datasets=data["datasets"],
                filters=data["filters"],
                reference=data["reference"],
                train_on_ready=data["train_on_ready"],
                created_by=request.user,
            )
        except ExportError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(VersionDetailSerializer(version).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("path", str, description="One file, e.g. manifest.json")],
        responses={(200, "application/x-tar"): OpenApiResponse(description="The version.")},
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None):
        version = self.get_object()
        if not version.is_ready:
            raise Http404("This version is not ready.")
        files = version_files(version)
        rel = request.query_params.get("path")
        if rel:
            if rel not in files:
                raise Http404(f"No file {rel!r} in this version.")
            return FileResponse(open_file(version, rel), as_attachment=True, filename=rel)
        response = StreamingHttpResponse(
            tar_stream(version, files), content_type="application/x-tar"
        )
        response["Content-Disposition"] = f'attachment; filename="{version.name}.tar"'
        return response


class TrainingJobSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "version",
            "kind",
            "preset",
            "config",
            "gpus",
            "status",
            "out_dir",
            "checkpoint_dir",
            "last_step",
            "returncode",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class TrainingJobCreateSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=TrainingJob.Kind.choices, default="stage1")
    preset = serializers.CharField(required=False, allow_blank=True, default="")
    gpus = serializers.IntegerField(required=False, min_value=1, max_value=64, default=1)
    config = serializers.DictField(required=False, default=dict)


class TrainingJobFilter(serializers.Serializer):
    version = id_param("Only jobs on this version (its id).")
    status = serializers.ChoiceField(choices=TrainingJob.Status.choices, required=False)


@extend_schema_view(
    list=list_schema(TrainingJobSerializer, TrainingJobFilter),
    create=extend_schema(
        request=TrainingJobCreateSerializer, responses={201: TrainingJobSerializer}
    ),
)
class TrainingJobViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = TrainingJobSerializer
    filter_serializer_class = TrainingJobFilter
    filter_lookups = {"version": "version_id"}
    policy_resource = "training-jobs"

    def get_queryset(self) -> QuerySet[TrainingJob]:
        versions = scope_versions(DatasetVersion.objects.all(), self.request.user)
        return TrainingJob.objects.filter(version__in=versions)

    def create(self, request: Request) -> Response:
        serializer = TrainingJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        version = DatasetVersion.objects.filter(pk=data.pop("version")).first()
        if version is None:
            raise ValidationError({"version": ["No version with this id."]})
        try:
            job = start_training_job(version=version, created_by=request.user, **data)
        except TrainingJobError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(TrainingJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: TrainingJobSerializer, 409: OpenApiResponse()})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        try:
            job = cancel_training_job(job=self.get_object())
        except TrainingJobError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(TrainingJobSerializer(job).data)
