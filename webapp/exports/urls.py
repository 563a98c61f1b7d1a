from django.urls import path

from webapp.exports import views

app_name = "exports"
urlpatterns = [
    path("", views.version_list, name="version_list"),
    path("cut/", views.version_cut, name="version_cut"),
    path("<int:pk>/", views.version_detail, name="version_detail"),
    path("<int:pk>/train/", views.job_start, name="job_start"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("webhooks/", views.webhook_log, name="webhook_log"),
]
