from django.urls import path

from webapp.evaluation import curator_views, rating_views

app_name = "evaluation"
urlpatterns = [
    path("", rating_views.index, name="index"),
    # Raters (blind)
    path("rounds/<int:pk>/mine", rating_views.my_round, name="my_round"),
    path("rounds/<int:pk>/next", rating_views.next_item, name="next_item"),
    path("assignments/<int:pk>/", rating_views.rate, name="rate"),
    path("assignments/<int:pk>/image", rating_views.seat_image, name="seat_image"),
    # Curators
    path("rounds/new", curator_views.round_new, name="round_new"),
    path("rounds/<int:pk>/", curator_views.round_detail, name="round_detail"),
    path("rounds/<int:pk>/items/sample", curator_views.items_sample, name="items_sample"),
    path("rounds/<int:pk>/items/import", curator_views.items_import, name="items_import"),
    path(
        "rounds/<int:pk>/items/drop-incomplete",
        curator_views.drop_incomplete,
        name="drop_incomplete",
    ),
    path("rounds/<int:pk>/systems/", curator_views.system_add, name="system_add"),
    path("rounds/<int:pk>/baseline", curator_views.baseline, name="baseline"),
    path("rounds/<int:pk>/open", curator_views.round_open, name="round_open"),
    path("rounds/<int:pk>/close", curator_views.round_close, name="round_close"),
    path("systems/<int:pk>/responses", curator_views.responses_import, name="responses_import"),
    path("systems/<int:pk>/generate", curator_views.generate, name="generate"),
    path("rounds/<int:pk>/results", curator_views.results, name="results"),
    path("rounds/<int:pk>/results/chart.svg", curator_views.results_chart, name="results_chart"),
    path(
        "rounds/<int:pk>/results/<str:table>.<str:fmt>",
        curator_views.results_download,
        name="results_download",
    ),
]
