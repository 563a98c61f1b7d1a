from django.urls import path

from webapp.regions import views

app_name = "regions"
urlpatterns = [
    path("", views.review_index, name="index"),
    path("datasets/<str:name>/", views.queue, name="queue"),
    path("datasets/<str:name>/start", views.start, name="start"),
    path("datasets/<str:name>/progress", views.progress, name="progress"),
    path("images/<int:pk>/", views.review_image, name="review_image"),
    path("images/<int:pk>/next", views.next_image, name="next_image"),
    path("images/<int:pk>/regions/", views.region_create, name="region_create"),
    path("images/<int:pk>/accept-all", views.accept_all, name="accept_all"),
    path("images/<int:pk>/undo", views.undo, name="undo"),
    path("images/<int:pk>/reviewed", views.review_mark, name="review_mark"),
    path("regions/<int:pk>/", views.region_fragment, name="region"),
    path("regions/<int:pk>/action", views.region_action, name="region_action"),
    path("regions/<int:pk>/delete", views.region_delete, name="region_delete"),
    path("regions/<int:pk>/history", views.region_history, name="history"),
    path("changes/<int:change_id>/restore", views.restore, name="restore"),
]
