from django.urls import path

from webapp.jobs import views

app_name = "jobs"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("<int:pk>/", views.run_detail, name="run_detail"),
    path("<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("<int:pk>/retry-failed/", views.run_retry_failed, name="run_retry_failed"),
    path("start/<str:name>/", views.run_start, name="run_start"),
]
