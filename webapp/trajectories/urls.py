from django.urls import path

from webapp.trajectories import views

app_name = "trajectories"
urlpatterns = [
    path("", views.index, name="index"),
    path("import", views.upload, name="import"),
    path("datasets/<str:name>/", views.queue, name="queue"),
    path("datasets/<str:name>/start", views.start, name="start"),
    path("<int:pk>/", views.editor, name="editor"),
    path("<int:pk>/document", views.document, name="document"),
    path("<int:pk>/edit", views.edit, name="edit"),
    path("<int:pk>/next", views.next_trajectory, name="next"),
    path("<int:pk>/history", views.history, name="history"),
    path("changes/<int:change_id>/restore", views.restore, name="restore"),
]
