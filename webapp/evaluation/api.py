"""REST API of evaluation rounds.

Raters (blind): ``POST /api/evaluation/assignments/next/ {"round": ID}`` claims (or returns)
their item; ``GET /api/evaluation/assignments/`` and ``.../ID/`` read their own seats;
``POST .../ID/ratings/ {"ratings": [{"slot", "scores", "hallucination", "error_types",
"version"?}]}`` saves or revises. Responses appear only as slots 1..n in the rater's order;
no system name, key or id, and no other rater's rating, is ever in an answer. Raters also
read ``GET /api/evaluation/rounds/`` in a blind shape (no systems).

Curators: create rounds, sample or import items, add systems, import or generate responses,
open, close, read leak warnings and results (``GET .../rounds/ID/results/``).
"""

from __future__ import annotations

import io

from django.db.models import Count
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.policy import READ, READ_BLIND, allows, seats
from webapp.core.versioning import Conflict
from webapp.evaluation import results as results_module
from webapp.evaluation import services
from webapp.evaluation.assignment import (
    NotYours,
    RatingInput,
    RoundNotOpen,
    claim_next,
    progress,
    slot_ratings,
    submit_ratings,
)
from webapp.evaluation.generation import start_generation
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Assignment, Round, System
from webapp.evaluation.stats.ratings import RatingDataError
from webapp.exports.models import DatasetVersion
from webapp.regions.models import Region

# --- Serializers (shape only) -------------------------------------------------------------------


# Plain strings in the schema: a "status" enum per model would collide with the other apps'.
ROUND_STATUS = serializers.CharField(read_only=True, help_text="draft, open or closed")


class BlindRoundSerializer(serializers.ModelSerializer):
    """A round as a rater sees it: no systems."""

    status = ROUND_STATUS

    class Meta:
        model = Round
        fields = ["id", "name", "description", "status", "raters_per_item", "criteria"]


class SystemSerializer(serializers.ModelSerializer):
    n_responses = serializers.IntegerField(source="n", read_only=True, default=None)
    status = serializers.CharField(read_only=True, help_text="ready, queued, running or failed")
    source = serializers.CharField(read_only=True, help_text="imported or rectify")

    class Meta:
        model = System
        fields = [
            "id", "name", "key", "source", "generation", "status", "error", "failures",
            "n_responses",
        ]  # fmt: skip
        read_only_fields = fields


class RoundSerializer(serializers.ModelSerializer):
    """A round as a curator sees it."""

    systems = serializers.SerializerMethodField()
    status = ROUND_STATUS
    n_items = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Round
        fields = [
            "id", "name", "description", "status", "raters_per_item", "seed", "baseline",
            "criteria", "lease_seconds", "sampling", "n_items", "systems", "created_at",
            "opened_at", "closed_at",
        ]  # fmt: skip
        read_only_fields = ["status", "baseline", "sampling", "opened_at", "closed_at"]

    def get_systems(self, round_: Round) -> list[dict]:
        systems = round_.systems.annotate(n=Count("responses")).order_by("pk")
        return SystemSerializer(systems, many=True).data


class RatingInSerializer(serializers.Serializer):
    slot = serializers.IntegerField(min_value=1)
    scores = serializers.DictField(child=serializers.IntegerField())
    hallucination = serializers.BooleanField(default=False)
    error_types = serializers.ListField(child=serializers.CharField(), default=list)
    version = serializers.IntegerField(min_value=1, required=False)


class RatingsInSerializer(serializers.Serializer):
    ratings = RatingInSerializer(many=True)


class NextSerializer(serializers.Serializer):
    round = serializers.IntegerField(min_value=1)


def blind_assignment(assignment: Assignment) -> dict:
    """Everything a rater needs for one item, with responses only as slots in their order."""
    item = assignment.item
    image = item.image
    texts = dict(item.responses.values_list("pk", "text"))
    saved = slot_ratings(assignment)
    regions = Region.objects.filter(image=image, status=Region.Status.ACCEPTED).order_by("pk")
    return {
        "id": assignment.pk,
        "round": {"id": assignment.round_id, "name": assignment.round.name},
        "status": assignment.status,
        "leased_until": assignment.leased_until,
        "question": item.question,
        "reference": item.reference,
        # Through the seat: a rater's image is never fetched by its own id.
        "image": {
            "width": image.width, "height": image.height,
            "url": reverse("evaluation:seat_image", args=[assignment.pk]),
        },
        "regions": [{"box": r.box, "phrase": r.phrase} for r in regions[:200]],
        "responses": [
            {
                "slot": slot,
                "text": texts[rid],
                "rating": saved[slot].snapshot() if slot in saved else None,
            }
            for slot, rid in enumerate(assignment.order, start=1)
        ],
    }  # fmt: skip


# --- Rater endpoints ----------------------------------------------------------------------------


class AssignmentViewSet(viewsets.GenericViewSet):
    """A rater's own items; everything blind."""

    policy_resource = "seats"
    # For the schema's path types only: every action reads the rater's own seats (``_mine``).
    queryset = Assignment.objects.none()
    pagination_class = None

    def _mine(self, request: Request, pk) -> Assignment:
        mine = seats(Assignment.objects.select_related("round", "item__image"), request.user)
        return get_object_or_404(mine, pk=pk)

    @extend_schema(responses={200: OpenApiResponse(description="The rater's assignments.")})
    def list(self, request: Request) -> Response:
        rows = (
            seats(Assignment.objects.all(), request.user)
            .exclude(status=Assignment.Status.OPEN)
            .order_by("pk")
            .values("id", "round_id", "status", "leased_until", "done_at")[:1000]
        )
        return Response({"results": list(rows)})

    @extend_schema(responses={200: OpenApiResponse(description="One item, blind.")})
    def retrieve(self, request: Request, pk=None) -> Response:
        return Response(blind_assignment(self._mine(request, pk)))

    @extend_schema(
        request=NextSerializer,
        responses={
            200: OpenApiResponse(description="The item to rate, blind."),
            204: OpenApiResponse(description="Nothing left for this rater."),
            409: OpenApiResponse(description="The round is not open."),
        },
    )
    @action(detail=False, methods=["post"])
    def next(self, request: Request) -> Response:
        data = NextSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        round_ = get_object_or_404(Round, pk=data.validated_data["round"])
        try:
            assignment = claim_next(round_, request.user)
        except RoundNotOpen as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        assignment = self._mine(request, assignment.pk)
        return Response(blind_assignment(assignment))

    @extend_schema(
        request=RatingsInSerializer,
        responses={
            200: OpenApiResponse(description="Saved; the item as it is now."),
            409: OpenApiResponse(description="Not yours any more, closed, or a stale version."),
            422: OpenApiResponse(description="A missing or bad value (named)."),
        },
    )
    @action(detail=True, methods=["post"])
    def ratings(self, request: Request, pk=None) -> Response:
        assignment = self._mine(request, pk)
        data = RatingsInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        inputs = [
            RatingInput(
                slot=r["slot"], scores=dict(r["scores"]), hallucination=r["hallucination"],
                error_types=set(r["error_types"]), version=r.get("version"),
            )
            for r in data.validated_data["ratings"]
        ]  # fmt: skip
        try:
            submit_ratings(assignment_id=assignment.pk, rater=request.user, inputs=inputs)
        except (NotYours, RoundNotOpen) as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        except Conflict:
            current = blind_assignment(self._mine(request, pk))
            return Response(current, status=status.HTTP_409_CONFLICT)
        except InputError as error:
            return Response({"detail": str(error)}, status=422)
        return Response(blind_assignment(self._mine(request, pk)))


# --- Rounds (curators; raters read a blind list) -------------------------------------------------


class ItemsInSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, help_text="A ready dataset version.")
    file = serializers.FileField(required=False, help_text="Items JSONL instead of a version.")
    n = serializers.IntegerField(min_value=1, required=False)
    seed = serializers.IntegerField(required=False)
    stratify = serializers.BooleanField(default=False)


class SystemInSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField(required=False, help_text="Responses JSONL.")


class OpenInSerializer(serializers.Serializer):
    acknowledge_leaks = serializers.BooleanField(default=False)


class BaselineInSerializer(serializers.Serializer):
    system = serializers.IntegerField(allow_null=True)


def _bad(error: Exception) -> Response:
    return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)


class RoundViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Rounds: raters list and read them blind; everything else is the curator's."""

    policy_resource = "rounds"
    policy_actions = {"list": READ_BLIND, "retrieve": READ_BLIND}
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    pagination_class = None

    def get_queryset(self):
        if allows(self.request.user, "rounds", READ):
            return Round.objects.annotate(n_items=Count("items")).order_by("-created_at")
        return Round.objects.exclude(status=Round.Status.DRAFT).order_by("-opened_at")

    def get_serializer_class(self):
        if allows(self.request.user, "rounds", READ):
            return RoundSerializer
        return BlindRoundSerializer

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = RoundSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        allowed = ("name", "description", "raters_per_item", "seed", "criteria", "lease_seconds")
        fields = {k: v for k, v in data.validated_data.items() if k in allowed}
        try:
            round_ = services.create_round(user=request.user, **fields)
        except InputError as error:
            return _bad(error)
        return Response(RoundSerializer(round_).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ItemsInSerializer, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def items(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        data = ItemsInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            if values.get("file") is not None:
                upload = values["file"]
                services.import_items(
                    round_=round_, lines=io.TextIOWrapper(upload.file, encoding="utf-8"),
                    name=upload.name, n=values.get("n"), stratify=values["stratify"],
                )  # fmt: skip
            elif values.get("version") is not None:
                version = DatasetVersion.objects.filter(pk=values["version"]).first()
                if version is None:
                    raise InputError(f"version: no dataset version {values['version']}")
                services.sample_from_version(
                    round_=round_, version=version,
                    n=values.get("n", services.DEFAULT_SAMPLE_SIZE),
                    seed=values.get("seed"), stratify=values["stratify"],
                )  # fmt: skip
            else:
                raise InputError("give a dataset version or an items file")
        except (InputError, UnicodeDecodeError) as error:
            return _bad(error)
        return Response(RoundSerializer(self.get_queryset().get(pk=round_.pk)).data)

    @extend_schema(request=SystemInSerializer, responses={201: SystemSerializer})
    @action(detail=True, methods=["post"])
    def systems(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        data = SystemInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            system = services.add_system(round_=round_, name=data.validated_data["name"])
            upload = data.validated_data.get("file")
            if upload is not None:
                try:
                    services.import_responses(
                        system=system, lines=io.TextIOWrapper(upload.file, encoding="utf-8"),
                        name=upload.name,
                    )  # fmt: skip
                except (InputError, UnicodeDecodeError):
                    system.delete()
                    raise
        except (InputError, UnicodeDecodeError) as error:
            return _bad(error)
        system = round_.systems.annotate(n=Count("responses")).get(pk=system.pk)
        return Response(SystemSerializer(system).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BaselineInSerializer, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def baseline(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        data = BaselineInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        chosen = data.validated_data["system"]
        system = round_.systems.filter(pk=chosen).first() if chosen else None
        if chosen and system is None:
            return _bad(InputError(f"system: {chosen} is not a system of this round"))
        services.set_baseline(round_=round_, system=system)
        return Response(RoundSerializer(self.get_queryset().get(pk=round_.pk)).data)

    @extend_schema(responses={200: OpenApiResponse(description="Responses naming a model.")})
    @action(detail=True, methods=["get"])
    def leaks(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        return Response(
            {
                "problems": services.readiness(round_),
                "leaks": [leak.__dict__ for leak in services.leak_warnings(round_)],
            }
        )

    @extend_schema(request=OpenInSerializer, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def open(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        data = OpenInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.open_round(round_=round_, **data.validated_data)
        except InputError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(RoundSerializer(self.get_queryset().get(pk=round_.pk)).data)

    @extend_schema(request=None, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        try:
            services.close_round(round_=round_)
        except InputError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(RoundSerializer(self.get_queryset().get(pk=round_.pk)).data)

    @extend_schema(responses={200: OpenApiResponse(description="stats.Results.as_dict().")})
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk=None) -> Response:
        round_ = self.get_object()
        if round_.status == Round.Status.DRAFT:
            return Response({"detail": "a draft round has no results"}, status=409)
        try:
            res = results_module.results_for(round_)
        except RatingDataError as error:
            return Response({"detail": str(error)}, status=409)
        return Response(
            {
                "final": round_.status == Round.Status.CLOSED,
                "systems": results_module.system_names(round_),
                "progress": progress(round_),
                "results": res.as_dict(),
            }
        )


class SystemViewSet(viewsets.GenericViewSet):
    """Responses of one system: import a JSONL, or generate them with rectify."""

    policy_resource = "rounds"
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    queryset = System.objects.select_related("round")

    class ResponsesIn(serializers.Serializer):
        file = serializers.FileField()

    class GenerateIn(serializers.Serializer):
        model = serializers.CharField()
        rm = serializers.CharField()
        k = serializers.IntegerField(default=2)

    @extend_schema(request=ResponsesIn, responses={200: SystemSerializer})
    @action(detail=True, methods=["post"])
    def responses(self, request: Request, pk=None) -> Response:
        system = self.get_object()
        data = self.ResponsesIn(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        try:
            services.import_responses(
                system=system, lines=io.TextIOWrapper(upload.file, encoding="utf-8"),
                name=upload.name,
            )  # fmt: skip
        except (InputError, UnicodeDecodeError) as error:
            return _bad(error)
        system = System.objects.annotate(n=Count("responses")).get(pk=system.pk)
        return Response(SystemSerializer(system).data)

    @extend_schema(request=GenerateIn, responses={202: SystemSerializer})
    @action(detail=True, methods=["post"])
    def generate(self, request: Request, pk=None) -> Response:
        system = self.get_object()
        data = self.GenerateIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            system = start_generation(system=system, **data.validated_data)
        except InputError as error:
            return _bad(error)
        return Response(SystemSerializer(system).data, status=status.HTTP_202_ACCEPTED)


ROUTES: list[tuple[str, type, str]] = [
    ("evaluation/rounds", RoundViewSet, "evaluation-round"),
    ("evaluation/systems", SystemViewSet, "evaluation-system"),
    ("evaluation/assignments", AssignmentViewSet, "evaluation-assignment"),
]
