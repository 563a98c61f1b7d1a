"""REST API for studies.

``GET /api/studies/`` lists them, ``GET /api/studies/{id}/`` gives one with its steps and the
Table 2 figures that have arrived, ``POST /api/studies/`` creates one from a ``study.json``
object (curators; the same checks as the command and the form) and
``POST /api/studies/{id}/start/`` starts it.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.policy import scope_versions
from webapp.exports.models import DatasetVersion
from webapp.studies.models import Study
from webapp.studies.results import collect, step_rows
from webapp.studies.services import StudyServiceError, create_study, start_study


class StudySerializer(serializers.ModelSerializer):
    version = serializers.SlugRelatedField(slug_field="name", read_only=True)
    steps = serializers.SerializerMethodField()
    scores = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = ["id", "name", "version", "status", "error", "spec", "evaluation_round",
                  "steps", "scores", "created_at", "started_at", "finished_at"]  # fmt: skip

    def get_steps(self, study: Study) -> list[dict]:
        return step_rows(study)

    def get_scores(self, study: Study) -> list[dict]:
        """One entry per arm and probe set: F1 (pope parser, all), its CI, Δ and McNemar p."""
        results = collect(study, compare=self.context.get("compare", False))
        out = []
        for (arm, _set), score in results.scores.items():
            out.append(
                {
                    "arm": arm, "probe_set": score.step.probe_set.set_id,
                    "benchmark_job": score.step.benchmark_job_id, "f1": score.f1,
                    "f1_ci95": list(score.ci) if score.ci else None, "delta": score.delta,
                    "p_value": score.p_value,
                }
            )  # fmt: skip
        return out


class StudyCreateSerializer(serializers.Serializer):
    spec = serializers.JSONField(help_text="The study.json object.")
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="The version's id (default: the spec's version)."
    )


@extend_schema_view(
    create=extend_schema(request=StudyCreateSerializer, responses={201: StudySerializer}),
)
class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = StudySerializer
    policy_resource = "studies"

    def get_queryset(self) -> QuerySet[Study]:
        versions = scope_versions(DatasetVersion.objects.all(), self.request.user)
        return Study.objects.filter(version__in=versions).select_related("version").order_by("id")

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "compare": self.action == "retrieve"}

    def create(self, request: Request) -> Response:
        serializer = StudyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = None
        if data.get("version"):
            version = (
                scope_versions(DatasetVersion.objects.all(), request.user)
                .filter(pk=data["version"])
                .first()
            )
            if version is None:
                raise ValidationError({"version": ["No dataset version with this id."]})
        try:
            study = create_study(spec=data["spec"], version=version, created_by=request.user)
        except StudyServiceError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StudySerializer, 409: OpenApiResponse()})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        try:
            study = start_study(study=self.get_object())
        except StudyServiceError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(StudySerializer(study).data)
