"""REST API for correction trajectories: list, filter, read with steps, edit, approve, reject.

``PATCH /api/trajectories/ID/`` takes the version the client read, in an ``If-Match`` header
(the ``ETag`` a GET answers with) or a ``version`` field, and goes through
``webapp.trajectories.services.update_trajectory``: a stale version answers 409 with the
trajectory as it is now, and every change keeps its history. Raters get 403, as on the pages.
"""

from __future__ import annotations

from pathlib import Path

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from training.formats import ERROR_TYPES
from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.core.http import upload_in_temporary_folder, upload_name
from webapp.core.importing.report import ON_ERROR, ImportFailed, RecordError
from webapp.core.policy import IMPORT, scope
from webapp.core.versioning import etag, read_if_match
from webapp.trajectories import services
from webapp.trajectories.importing import import_trajectories
from webapp.trajectories.models import Trajectory, TrajectoryStep
from webapp.trajectories.queue import tagged_trajectory_ids


class TrajectoryStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrajectoryStep
        fields = [
            "k", "response", "feedback", "response_by", "feedback_by", "error_types",
            "m_latency_ms", "rm_latency_ms",
        ]  # fmt: skip


class TrajectorySerializer(serializers.ModelSerializer):
    image_sha256 = serializers.CharField(source="image.sha256", read_only=True)
    steps = TrajectoryStepSerializer(many=True, read_only=True)

    class Meta:
        model = Trajectory
        fields = [
            "id", "dataset", "image", "image_sha256", "question_item", "question",
            "reference_answer", "final_answer", "status", "outcome", "seeded_error", "run",
            "model_id", "rm_id", "prompt_versions", "version", "updated_at", "steps",
        ]  # fmt: skip


class ErrorTypeFilter(serializers.ChoiceField):
    """An error type, turned into the ids of trajectories with a step tagged so."""

    def to_internal_value(self, data):
        return tagged_trajectory_ids(super().to_internal_value(data))


class TrajectoryFilter(serializers.Serializer):
    dataset = id_param("Only trajectories of this dataset (its id).")
    run = id_param("Only trajectories made by this run (its id).")
    status = serializers.ChoiceField(choices=Trajectory.Status.choices, required=False)
    error_type = ErrorTypeFilter(
        choices=ERROR_TYPES, required=False, help_text="Only those with a step tagged so."
    )
    seeded_error = serializers.ChoiceField(
        choices=ERROR_TYPES, required=False, help_text="Only those with this injected error."
    )


class TrajectoryStepEditSerializer(serializers.Serializer):
    response = serializers.CharField(required=False, allow_blank=True)
    feedback = serializers.CharField(required=False, allow_blank=True)
    error_types = serializers.ListField(
        child=serializers.ChoiceField(choices=ERROR_TYPES), required=False
    )


class TrajectoryNewStepSerializer(TrajectoryStepEditSerializer):
    at = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, help_text="Insert before step k (end: null)."
    )


class TrajectoryEditSerializer(serializers.Serializer):
    """What an edit may change; every field optional. Validates shapes only, writes nothing."""

    version = serializers.IntegerField(
        required=False, min_value=1, help_text="The version read; or send If-Match."
    )
    question = serializers.CharField(required=False)
    final_answer = serializers.CharField(required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Trajectory.Status.choices, required=False)
    edit_steps = serializers.DictField(
        child=TrajectoryStepEditSerializer(), required=False,
        help_text='Edits by step number: {"1": {"response": "...", "error_types": ["spatial"]}}.',
    )  # fmt: skip
    add_step = TrajectoryNewStepSerializer(required=False)
    remove_step = serializers.IntegerField(required=False, min_value=0)


class TrajectoryDecisionSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="The version read; or send If-Match."
    )


class TrajectoryImportSerializer(serializers.Serializer):
    """The multipart form of an import; see ``webapp.trajectories.importing`` for the lines."""

    dataset = serializers.CharField(help_text="The name of the dataset holding the images.")
    file = serializers.FileField(help_text="JSONL in the FORMATS.md SFT shape.")
    on_error = serializers.ChoiceField(
        choices=ON_ERROR, default="abort",
        help_text="abort: a bad line writes nothing; skip: leave out trajectories with one.",
    )  # fmt: skip
    status = serializers.ChoiceField(
        choices=Trajectory.Status.choices, default=Trajectory.Status.IN_REVIEW,
        help_text="Status of trajectories whose lines carry none.",
    )  # fmt: skip


def _shown(errors: list[RecordError], tmp: Path, name: str) -> list[dict[str, str]]:
    """Errors with the temporary path replaced by the name of the file the uploader sent."""
    return [
        {"file": e.file.replace(str(tmp / "upload.jsonl"), name), "record": e.record,
         "field": e.field, "reason": e.reason}
        for e in errors
    ]  # fmt: skip


CONFLICT = OpenApiResponse(
    TrajectorySerializer, description="Stale version: the trajectory as it is now."
)


@extend_schema_view(list=list_schema(TrajectorySerializer, TrajectoryFilter))
class TrajectoryViewSet(FilteredListMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Trajectories with their steps, filtered by ``dataset``, ``run``, ``status``,
    ``error_type`` and ``seeded_error``; PATCH edits one, ``approve`` and ``reject`` decide."""

    http_method_names = ["get", "patch", "post", "head", "options"]
    policy_resource = "trajectories"
    policy_actions = {"import_file": IMPORT}
    serializer_class = TrajectorySerializer
    filter_serializer_class = TrajectoryFilter
    filter_lookups = {"error_type": "pk__in"}

    def get_queryset(self) -> QuerySet[Trajectory]:
        # Two queries per page whatever its size: the rows (with the image's sha256) and steps.
        trajectories = scope(Trajectory.objects.all(), self.request.user, "dataset")
        return trajectories.select_related("image").prefetch_related(
            Prefetch("steps", queryset=TrajectoryStep.objects.order_by("k"))
        )

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        response = super().retrieve(request, *args, **kwargs)
        response["ETag"] = etag(response.data["version"])
        return response

    def _version(self, request: Request, body: int | None) -> int | None:
        if body is not None:
            return body
        return read_if_match(request.headers.get("If-Match"))

    def _write(self, request: Request, version: int | None, changes: dict) -> Response:
        trajectory = self.get_object()
        if version is None:
            return Response({"version": ["send the version read, or an If-Match header"]}, 400)
        try:
            services.update_trajectory(
                trajectory_id=trajectory.pk, expected_version=version, changes=changes,
                user=request.user,
            )  # fmt: skip
        except services.TrajectoryConflict:
            current = self.get_queryset().filter(pk=trajectory.pk).first()
            if current is None:
                return Response({"detail": "the trajectory no longer exists"}, status=409)
            return Response(
                TrajectorySerializer(current).data,
                status=status.HTTP_409_CONFLICT,
                headers={"ETag": etag(current.version)},
            )
        except ValueError as error:
            return Response({"detail": str(error)}, status=400)
        fresh = self.get_queryset().get(pk=trajectory.pk)
        return Response(TrajectorySerializer(fresh).data, headers={"ETag": etag(fresh.version)})

    def _read_version(self, request: Request, serializer: serializers.Serializer):
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            return data, self._version(request, data.pop("version", None))
        except ValueError:
            return data, "bad"

    @extend_schema(
        request=TrajectoryEditSerializer,
        responses={
            200: TrajectorySerializer,
            400: OpenApiResponse(description="A bad field or a missing version."),
            409: CONFLICT,
        },
    )
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        changes, version = self._read_version(request, TrajectoryEditSerializer(data=request.data))
        if version == "bad":
            return Response({"If-Match": ["must be the trajectory's version"]}, status=400)
        if "add_step" in changes:
            changes["add_step"] = dict(changes["add_step"])
        return self._write(request, version, changes)

    def _decide(self, request: Request, decision: str) -> Response:
        _, version = self._read_version(request, TrajectoryDecisionSerializer(data=request.data))
        if version == "bad":
            return Response({"If-Match": ["must be the trajectory's version"]}, status=400)
        return self._write(request, version, {"status": decision})

    @extend_schema(
        request=TrajectoryDecisionSerializer, responses={200: TrajectorySerializer, 409: CONFLICT}
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """Approve the trajectory (it needs a final answer)."""
        return self._decide(request, Trajectory.Status.APPROVED)

    @extend_schema(
        request=TrajectoryDecisionSerializer, responses={200: TrajectorySerializer, 409: CONFLICT}
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        """Reject the trajectory: it will not enter a dataset version."""
        return self._decide(request, Trajectory.Status.REJECTED)

    @extend_schema(
        request={"multipart/form-data": TrajectoryImportSerializer},
        responses={
            201: OpenApiResponse(description="dataset, run, counts and skipped lines' errors"),
            400: OpenApiResponse(description="Nothing was written; errors by line and field."),
        },
    )
    @action(
        detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser],
    )  # fmt: skip
    def import_file(self, request: Request) -> Response:
        """Import trajectories from an uploaded JSONL file (curators only)."""
        form = TrajectoryImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        name = upload_name(data["file"], "upload.jsonl")
        with upload_in_temporary_folder(
            data["file"], name="upload.jsonl", prefix="fgam-trajectories-"
        ) as path:
            tmp = path.parent
            try:
                report = import_trajectories(
                    dataset=data["dataset"], file=path, on_error=data["on_error"],
                    status=data["status"], user=request.user,
                )  # fmt: skip
            except ImportFailed as failed:
                errors = _shown(failed.report.errors, tmp, name)
                detail = f"nothing was written: {len(errors)} error(s)"
                return Response({"detail": detail, "errors": errors}, status=400)
            body = {
                "dataset": report.dataset,
                "format": report.format,
                "run": report.run_id,
                "counts": report.counts(),
                "errors": _shown(report.errors, tmp, name),
            }
        return Response(body, status=status.HTTP_201_CREATED)


ROUTES: list[tuple[str, type, str]] = [("trajectories", TrajectoryViewSet, "trajectory")]
