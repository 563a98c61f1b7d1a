from django.apps import AppConfig


class RegionsConfig(AppConfig):
    name = "webapp.regions"
    label = "regions"
