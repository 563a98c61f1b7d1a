from django.urls import path

from webapp.catalog import views, vocabulary_views

app_name = "catalog"
urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("datasets/<str:name>/", views.image_grid, name="image_grid"),
    path("datasets/<str:name>/access", views.dataset_access, name="dataset_access"),
    path("datasets/<str:name>/vocabulary", vocabulary_views.vocabulary_page, name="vocabulary"),
    path("datasets/<str:name>/aliases", vocabulary_views.aliases, name="aliases"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/thumb", views.image_thumb, name="image_thumb"),
    path("images/<int:pk>/file", views.image_file, name="image_file"),
]
