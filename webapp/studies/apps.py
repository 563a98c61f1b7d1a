from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "webapp.studies"
    label = "studies"
    verbose_name = "Studies"

    def ready(self) -> None:
        # Training and benchmark jobs tell webapp.core.job_events when they end; a study
        # advances then. Registered here so the job apps never import this one.
        from webapp.core.job_events import on_job_finished
        from webapp.studies.services import on_job_finished as advance_studies_of

        on_job_finished(advance_studies_of)
