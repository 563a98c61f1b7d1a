from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # Registers the schema extension of the API's session login.
        from webapp.core import schema  # noqa: F401
