"""REST API for runs: what was done, with which model and parameters, and how far it got.

Curators start pseudo-label and caption runs (``POST /api/runs/``), trajectory runs
(``POST /api/runs/trajectories/``), and cancel, resume or retry
them (``POST /api/runs/{id}/cancel/``, ``/resume/``, ``/retry-failed/``); everyone logged in
reads them, with live progress: done and total, failures with reasons, items/s, ETA, tokens.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.catalog.models import Dataset
from webapp.core.api import MAX_ID, FilteredListMixin, id_param, list_schema
from webapp.core.policy import scope
from webapp.jobs import captioning, pseudo_label, trajectories
from webapp.jobs.models import Run
from webapp.jobs.services import (
    RunStateError,
    cancel_run,
    failures,
    resume_run,
    retry_failed,
    run_cost,
)


class RunSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True, help_text="(done + failed) / total, 0..1.")
    duration = serializers.FloatField(
        source="duration_s", read_only=True, allow_null=True, help_text="Seconds, once finished."
    )
    items_per_second = serializers.FloatField(
        read_only=True, allow_null=True, help_text="Items (images or regions) per second so far."
    )
    eta_seconds = serializers.FloatField(
        source="eta_s",
        read_only=True,
        allow_null=True,
        help_text="Seconds left at the rate so far, while running and fully planned.",
    )
    cost = serializers.SerializerMethodField(
        help_text="LLM cost from the tokens and the prices configured when the run started; "
        "null without a price."
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
            "items_per_second",
            "eta_seconds",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "summary",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
        ]

    def get_cost(self, run: Run) -> float | None:
        return run_cost(run)


class FailureSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="The batch's index in the run.")
    id = serializers.IntegerField(
        allow_null=True, help_text="The failed item: an image id, or a region id for captions."
    )
    error = serializers.CharField()


class RunDetailSerializer(RunSerializer):
    """One run adds its per-record errors and failures, which can be long."""

    failures = serializers.SerializerMethodField(
        help_text="Failed items with their reasons (the first 100), as they stand now."
    )

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "errors", "failures"]

    @extend_schema_field(FailureSerializer(many=True))
    def get_failures(self, run: Run) -> list[dict]:
        return failures(run, limit=100)


class RunFilter(serializers.Serializer):
    dataset = id_param("Only runs on this dataset (its id).")
    kind = serializers.ChoiceField(choices=Run.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Run.Status.choices, required=False)


def _unit(help_text: str, default: float | None = None) -> serializers.FloatField:
    return serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text=help_text, default=default
    )


# The kinds a client may start (named StartableRunKindEnum in the schema, see settings).
STARTABLE_KINDS = [(Run.Kind.PSEUDO_LABEL, "Pseudo label"), (Run.Kind.CAPTION, "Caption")]
PSEUDO_LABEL_FIELDS = {
    "prompt_mode",
    "labels",
    "box_threshold",
    "text_threshold",
    "nms_iou",
    "image_filter",
    "backend",
}
CAPTION_FIELDS = {"strategy", "concurrency", "region_filter"}


class RunCreateSerializer(serializers.Serializer):
    """A pseudo-label or caption run to start. Validates and shapes; reads nothing."""

    kind = serializers.ChoiceField(choices=STARTABLE_KINDS)
    dataset = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Dataset id.")
    model = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=255,
        help_text="Model id or folder; defaults to FGAM_DETECTOR_MODEL or FGAM_LLM_MODEL.",
    )
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=1024)
    device = serializers.RegexField(
        r"^(auto|cpu|mps|cuda(:\d+)?)$", required=False, help_text="auto, cpu, cuda or cuda:N."
    )
    dtype = serializers.ChoiceField(choices=pseudo_label.DTYPES, required=False)
    # Pseudo-label runs
    prompt_mode = serializers.ChoiceField(
        choices=pseudo_label.PROMPT_MODES,
        required=False,
        help_text="labels: the given list; vocabulary: the dataset's ground-truth phrases; "
        "caption: noun phrases of each image's global caption.",
    )
    labels = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=10_000
    )
    box_threshold = _unit("Box score threshold (default FGAM_BOX_THRESHOLD).")
    text_threshold = _unit("Text (phrase) threshold (default FGAM_TEXT_THRESHOLD).")
    nms_iou = _unit("IoU above which boxes of the same phrase are merged.")
    backend = serializers.ChoiceField(choices=["transformers", "groundingdino-py"], required=False)
    image_filter = serializers.DictField(
        required=False, help_text="split, ids (at most 10,000), min_id, max_id."
    )
    # Caption runs
    strategy = serializers.ChoiceField(choices=captioning.STRATEGIES, required=False)
    concurrency = serializers.IntegerField(required=False, min_value=1, max_value=512)
    region_filter = serializers.DictField(
        required=False, help_text="origin, status, run, ids (at most 10,000), min_id, max_id."
    )

    def validate(self, attrs: dict) -> dict:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        pseudo = attrs["kind"] == Run.Kind.PSEUDO_LABEL
        wrong = (CAPTION_FIELDS if pseudo else PSEUDO_LABEL_FIELDS) & set(attrs)
        if wrong:
            other = "caption" if pseudo else "pseudo-label"
            raise ValidationError({name: [f"Only for {other} runs."] for name in sorted(wrong)})
        try:
            if pseudo:
                attrs["image_filter"] = pseudo_label.check_image_filter(attrs.get("image_filter"))
            else:
                attrs["region_filter"] = captioning.check_region_filter(attrs.get("region_filter"))
        except ValueError as exc:
            key = "image_filter" if pseudo else "region_filter"
            raise ValidationError({key: [str(exc)]}) from exc
        if pseudo:
            mode = attrs.setdefault("prompt_mode", "labels")
            if mode == "labels" and not [x for x in attrs.get("labels", []) if x.strip()]:
                raise ValidationError(
                    {"labels": ["Give at least one label for prompt_mode labels."]}
                )
            if mode != "labels" and attrs.get("labels"):
                raise ValidationError({"labels": ["Labels are only used with prompt_mode labels."]})
        else:
            strategy = attrs.setdefault("strategy", "template")
            if strategy == "local" and not attrs.get("model"):
                raise ValidationError({"model": ["The local strategy needs a model."]})
        return attrs


class TrajectoryRunCreateSerializer(serializers.Serializer):
    """A trajectory run (answer-critique-revise loop) to start; see ``start_trajectory_run``."""

    dataset = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Dataset id.")
    m = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="M: URL#MODEL for an endpoint, else a local folder or hub id; default from "
        "FGAM_LLM_BASE_URL and FGAM_MLLM_MODEL.",
    )  # fmt: skip
    rm = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="The rectification module, same forms; default FGAM_RM_MODEL.",
    )  # fmt: skip
    k = serializers.IntegerField(
        required=False, min_value=0, max_value=trajectories.MAX_K, help_text="Most revisions."
    )
    seeded_errors = serializers.ListField(
        child=serializers.ChoiceField(choices=list(trajectories.SEEDED_ERROR_TYPES)),
        required=False,
        help_text="Start from the reference answer with one injected error of these types.",
    )
    seed = serializers.IntegerField(required=False, min_value=0)
    concurrency = serializers.IntegerField(required=False, min_value=1, max_value=512)
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=1024)
    max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=8192)
    m_vision = serializers.BooleanField(required=False)
    rm_vision = serializers.BooleanField(required=False)
    device = serializers.RegexField(r"^(auto|cpu|mps|cuda(:\d+)?)?$", required=False)
    dtype = serializers.ChoiceField(choices=pseudo_label.DTYPES, required=False)
    question_filter = serializers.DictField(
        required=False, help_text="split, source, min_id, max_id."
    )


CONFLICT = OpenApiResponse(description="The run's status does not allow this; see detail.")


@extend_schema_view(
    list=list_schema(RunSerializer, RunFilter),
    retrieve=extend_schema(responses=RunDetailSerializer),
    create=extend_schema(
        request=RunCreateSerializer,
        responses={201: RunDetailSerializer, 400: OpenApiResponse(description="Invalid.")},
    ),
)
class RunViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Runs, filtered by ``dataset``, ``kind`` and ``status``; curators start and steer them."""

    filter_serializer_class = RunFilter
    filter_lookups = {"dataset": "dataset_id"}
    # Reading is the editors'; starting and steering (every POST) the curators'.
    policy_resource = "runs"

    def get_queryset(self) -> QuerySet[Run]:
        queryset = scope(Run.objects.all(), self.request.user, "dataset")
        return queryset.defer("errors") if self.action == "list" else queryset

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.action == "create":
            return RunCreateSerializer
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def create(self, request: Request) -> Response:
        serializer = RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        dataset = Dataset.objects.filter(pk=data.pop("dataset")).first()
        if dataset is None:
            raise ValidationError({"dataset": ["No dataset with this id."]})
        kind = data.pop("kind")
        start = (
            pseudo_label.start_pseudo_label_run
            if kind == Run.Kind.PSEUDO_LABEL
            else captioning.start_caption_run
        )
        try:
            run = start(dataset=dataset, user=request.user, **data)
        except ValueError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=TrajectoryRunCreateSerializer,
        responses={201: RunDetailSerializer, 400: OpenApiResponse(description="Invalid.")},
    )
    @action(detail=False, methods=["post"], url_path="trajectories")
    def start_trajectories(self, request: Request) -> Response:
        """Start a trajectory run over a dataset's questions (M answers, the RM critiques)."""
        serializer = TrajectoryRunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        dataset = Dataset.objects.filter(pk=data.pop("dataset")).first()
        if dataset is None:
            raise ValidationError({"dataset": ["No dataset with this id."]})
        try:
            run = trajectories.start_trajectory_run(dataset=dataset, user=request.user, **data)
        except ValueError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    def _steer(self, change) -> Response:
        run = self.get_object()
        try:
            change(run=run)
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        run.refresh_from_db()
        return Response(RunDetailSerializer(run).data)

    @extend_schema(request=None, responses={200: RunDetailSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Cancel a queued or running run: no new batch starts."""
        return self._steer(cancel_run)

    @extend_schema(request=None, responses={200: RunDetailSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        """Go on with a cancelled, failed or stalled run: unfinished batches are handed out."""
        return self._steer(resume_run)

    @extend_schema(request=None, responses={200: RunDetailSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str) -> Response:
        """Run every failed item of the run again, in new batches."""
        return self._steer(retry_failed)
