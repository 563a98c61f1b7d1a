from django.urls import path

from webapp.benchmarks import views

app_name = "benchmarks"
urlpatterns = [
    path("", views.benchmark_list, name="list"),
    path("new/", views.benchmark_new, name="new"),
    path("start/", views.benchmark_start, name="start"),
    path("<int:pk>/", views.benchmark_detail, name="detail"),
    path("<int:pk>/cancel/", views.benchmark_cancel, name="cancel"),
    path("<int:pk>/answers/", views.benchmark_answers, name="answers"),
    path("<int:pk>/images/<str:probe_id>/", views.probe_image, name="probe_image"),
]
