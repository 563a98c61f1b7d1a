from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("", include("webapp.catalog.urls")),
    path("runs/", include("webapp.jobs.urls")),
    path("versions/", include("webapp.exports.urls")),
    path("review/", include("webapp.regions.urls")),
    path("trajectories/", include("webapp.trajectories.urls")),
    path("evaluation/", include("webapp.evaluation.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
