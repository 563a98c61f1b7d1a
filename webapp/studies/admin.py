from django.contrib import admin

from webapp.studies.models import Study, StudyStep


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "status", "created_at")


@admin.register(StudyStep)
class StudyStepAdmin(admin.ModelAdmin):
    list_display = ("study", "kind", "key", "status", "training_job", "benchmark_job")
