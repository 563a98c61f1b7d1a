from django.contrib import admin

from webapp.benchmarks.models import BenchmarkJob


@admin.register(BenchmarkJob)
class BenchmarkJobAdmin(admin.ModelAdmin):
    list_display = ("id", "probe_set", "model_spec", "queue", "status", "created_at")
    list_filter = ("status", "queue")
    # The answers are the scorer's output: shown on the job page, never edited.
    exclude = ("metrics",)
