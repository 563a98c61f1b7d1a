from django.urls import path

from webapp.studies import views

app_name = "studies"
urlpatterns = [
    path("", views.study_list, name="list"),
    path("create/", views.study_create, name="create"),
    path("<int:pk>/", views.study_detail, name="detail"),
    path("<int:pk>/start/", views.study_start, name="start"),
    path("<int:pk>/retry/", views.study_retry, name="retry"),
    path("<int:pk>/table2.<str:fmt>", views.study_table, name="table"),
]
