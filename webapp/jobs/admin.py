"""Runs are records of work done; they are shown, not edited, so provenance stays true."""

from __future__ import annotations

from django.contrib import admin

from webapp.core.admin import ReadOnlyAdmin
from webapp.jobs.models import Run


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "dataset",
        "status",
        "progress_percent",
        "done",
        "failed",
        "total",
        "model_id",
        "created_at",
        "finished_at",
    ]
    list_filter = ["kind", "status"]
    search_fields = ["=id", "model_id"]
    raw_id_fields = ["dataset", "created_by"]
    list_select_related = ["dataset"]

    @admin.display(description="progress")
    def progress_percent(self, obj: Run) -> str:
        return f"{obj.progress:.0%}"
