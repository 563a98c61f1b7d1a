"""Routes of the REST API under ``/api/`` (schema and docs are in ``webapp.urls``)."""

from django.urls import include, path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import APIRootView, DefaultRouter

from webapp.benchmarks.api import BenchmarkViewSet
from webapp.catalog.api import DatasetViewSet, ImageViewSet
from webapp.core.throttles import TokenRateThrottle
from webapp.evaluation.api import ROUTES as EVALUATION_ROUTES
from webapp.exports.api import TrainingJobViewSet, VersionViewSet
from webapp.jobs.api import RunViewSet
from webapp.probes.api import ROUTES as PROBE_ROUTES
from webapp.regions.api import RegionViewSet
from webapp.studies.api import StudyViewSet
from webapp.trajectories.api import ROUTES as TRAJECTORY_ROUTES


class TokenView(ObtainAuthToken):
    """Trade a username and password for the user's API token (created on first use).

    Open to anonymous callers, and reading no session: a logged-in browser posting here
    without a CSRF token would otherwise be refused by session authentication.
    """

    authentication_classes = ()
    policy_resource = "account"
    throttle_classes = (TokenRateThrottle,)

    @extend_schema(
        request=AuthTokenSerializer,
        responses=inline_serializer("Token", {"token": serializers.CharField()}),
        auth=[],
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)

    def throttled(self, request: Request, wait: float | None) -> None:
        raise Throttled(wait, detail="Too many token requests from this address.")


class ApiRootView(APIRootView):
    """The list of the API's routes."""

    policy_resource = "api-docs"


# No ``.json`` suffix routes: half the handlers take no ``format`` argument and answered them
# 500; ``Accept`` or ``?format=`` choose the renderer.
router = DefaultRouter()
router.include_format_suffixes = False
router.APIRootView = ApiRootView
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("images", ImageViewSet, basename="image")
router.register("regions", RegionViewSet, basename="region")
router.register("runs", RunViewSet, basename="run")
router.register("versions", VersionViewSet, basename="version")
router.register("training-jobs", TrainingJobViewSet, basename="training-job")
router.register("benchmarks", BenchmarkViewSet, basename="benchmark")
router.register("studies", StudyViewSet, basename="study")
for prefix, viewset, basename in TRAJECTORY_ROUTES + EVALUATION_ROUTES + PROBE_ROUTES:
    router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("", include(router.urls)),
]
