from django.urls import path

from webapp.probes import views

app_name = "probes"
urlpatterns = [
    path("", views.probe_set_list, name="list"),
    path("build/", views.probe_set_build, name="build"),
    path("<int:pk>/", views.probe_set_detail, name="detail"),
]
