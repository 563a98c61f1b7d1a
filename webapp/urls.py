from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from webapp.core.policy import allow
from webapp.core.views import LoginView


class SchemaView(SpectacularAPIView):
    policy_resource = "api-docs"


class DocsView(SpectacularSwaggerView):
    """The Swagger page. It renders only HTML, so it has no ``OPTIONS`` answer (405)."""

    policy_resource = "api-docs"
    metadata_class = None


urlpatterns = [
    path("", include("webapp.catalog.urls")),
    path("runs/", include("webapp.jobs.urls")),
    path("versions/", include("webapp.exports.urls")),
    path("review/", include("webapp.regions.urls")),
    path("trajectories/", include("webapp.trajectories.urls")),
    path("evaluation/", include("webapp.evaluation.urls")),
    path("benchmarks/", include("webapp.benchmarks.urls")),
    path("probe-sets/", include("webapp.probes.urls")),
    path("studies/", include("webapp.studies.urls")),
    path("login/", allow("account")(LoginView.as_view()), name="login"),
    path("logout/", allow("account")(auth_views.LogoutView.as_view()), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api_urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
]
