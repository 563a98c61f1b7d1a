"""REST API for benchmark jobs.

``GET /api/benchmarks/`` lists jobs (``?probe_set=``, ``?training_job=``, ``?status=``),
``GET /api/benchmarks/{id}/`` gives one with its ``metrics.json``, ``POST`` starts one
(curators; the same checks as the form), ``POST /api/benchmarks/{id}/cancel/`` stops it and
``GET /api/benchmarks/{id}/answers/`` pages through its answers (``?split=``, ``?object=``,
``?parser=``, ``?wrong=true``).
"""

from __future__ import annotations

from django.db.models import F, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.benchmarks.models import PARSERS, BenchmarkAnswer, BenchmarkJob
from webapp.benchmarks.services import (
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    BenchmarkError,
    cancel_benchmark,
    start_benchmark,
)
from webapp.core.api import BAD_QUERY, FilteredListMixin, id_param, list_schema
from webapp.core.policy import scope
from webapp.exports.models import TrainingJob
from webapp.probes.models import ProbeSet


class BenchmarkSerializer(serializers.ModelSerializer):
    probe_set = serializers.SlugRelatedField(slug_field="set_id", read_only=True)

    class Meta:
        model = BenchmarkJob
        fields = [
            "id", "probe_set", "training_job", "model_spec", "queue", "batch_size",
            "concurrency", "max_new_tokens", "limit", "status", "progress_done",
            "progress_total", "out_dir", "error", "metrics", "created_at", "started_at",
            "finished_at",
        ]  # fmt: skip


class BenchmarkCreateSerializer(serializers.Serializer):
    probe_set = serializers.IntegerField(min_value=1, help_text="The probe set's id.")
    training_job = serializers.IntegerField(
        required=False, min_value=1, help_text="Score this job's final checkpoint."
    )
    model_spec = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Folder, hub id or URL#MODEL."
    )
    batch_size = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_BATCH_SIZE, default=8
    )
    concurrency = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_CONCURRENCY, default=16
    )
    max_new_tokens = serializers.IntegerField(required=False, min_value=1, allow_null=True)
    limit = serializers.IntegerField(required=False, min_value=1, allow_null=True)


class BenchmarkFilter(serializers.Serializer):
    probe_set = id_param("Only jobs on this probe set (its id).")
    training_job = id_param("Only jobs scoring this training job (its id).")
    status = serializers.ChoiceField(choices=BenchmarkJob.Status.choices, required=False)


class AnswerSerializer(serializers.ModelSerializer):
    class Meta:
        model = BenchmarkAnswer
        fields = [
            "probe_id", "split", "object", "subject", "relation", "question", "expected",
            "answer", "parsed", "strict", "pope", "word", "latency_ms", "image_sha256",
            "boxes",
        ]  # fmt: skip


class AnswerFilter(serializers.Serializer):
    split = serializers.CharField(required=False)
    object = serializers.CharField(required=False)
    parser = serializers.ChoiceField(choices=PARSERS, required=False, default="strict")
    wrong = serializers.BooleanField(
        required=False, default=False, help_text="Only answers the parser got wrong."
    )


@extend_schema_view(
    list=list_schema(BenchmarkSerializer, BenchmarkFilter),
    create=extend_schema(request=BenchmarkCreateSerializer, responses={201: BenchmarkSerializer}),
)
class BenchmarkViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = BenchmarkSerializer
    filter_serializer_class = BenchmarkFilter
    filter_lookups = {"probe_set": "probe_set_id", "training_job": "training_job_id"}
    policy_resource = "benchmarks"

    def get_queryset(self) -> QuerySet[BenchmarkJob]:
        jobs = BenchmarkJob.objects.select_related("probe_set").order_by("id")
        return scope(jobs, self.request.user, "probe_set__datasets").distinct()

    def create(self, request: Request) -> Response:
        serializer = BenchmarkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        probe_set = ProbeSet.objects.filter(pk=data.pop("probe_set")).first()
        if probe_set is None:
            raise ValidationError({"probe_set": ["No probe set with this id."]})
        job_id = data.pop("training_job", None)
        training_job = None
        if job_id is not None:
            training_job = TrainingJob.objects.filter(pk=job_id).first()
            if training_job is None:
                raise ValidationError({"training_job": ["No training job with this id."]})
        try:
            job = start_benchmark(
                probe_set=probe_set, training_job=training_job, created_by=request.user, **data
            )
        except BenchmarkError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(BenchmarkSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: BenchmarkSerializer, 409: OpenApiResponse()})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        try:
            job = cancel_benchmark(job=self.get_object())
        except BenchmarkError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(BenchmarkSerializer(job).data)

    @extend_schema(
        parameters=[AnswerFilter], responses={200: AnswerSerializer(many=True), 400: BAD_QUERY}
    )
    @action(detail=True, methods=["get"])
    def answers(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        params = {k: v for k, v in request.query_params.items() if v != ""}
        params.pop("cursor", None)
        params.pop("page_size", None)
        params.pop("format", None)
        filters = AnswerFilter(data=params)
        unknown = sorted(set(params) - set(filters.fields))
        if unknown:
            raise ValidationError({name: ["Unknown query parameter."] for name in unknown})
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        answers = BenchmarkAnswer.objects.filter(job=job)
        for key in ("split", "object"):
            if key in wanted:
                answers = answers.filter(**{key: wanted[key]})
        if wanted["wrong"]:
            answers = answers.exclude(**{wanted["parser"]: F("expected")})
        page = self.paginate_queryset(answers.order_by("id"))
        return self.get_paginated_response(AnswerSerializer(page, many=True).data)
