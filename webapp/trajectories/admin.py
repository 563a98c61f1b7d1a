"""Trajectories are read-only here: every change must go through
``webapp.trajectories.services`` so its version and history stay whole. People edit them in the
editor or through the API."""

from __future__ import annotations

from django.contrib import admin

from webapp.core.admin import ReadOnlyAdmin
from webapp.trajectories.models import (
    Trajectory,
    TrajectoryChange,
    TrajectoryLease,
    TrajectoryStep,
)


class StepInline(admin.TabularInline):
    model = TrajectoryStep
    fields = ["k", "response", "feedback", "response_by", "feedback_by", "error_types",
              "m_latency_ms", "rm_latency_ms"]  # fmt: skip
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["k"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Trajectory)
class TrajectoryAdmin(ReadOnlyAdmin):
    list_display = ["id", "dataset", "image", "status", "seeded_error", "outcome", "run",
                    "version", "updated_at"]  # fmt: skip
    list_filter = ["status", "seeded_error", "outcome"]
    search_fields = ["=id", "^question", "=source_key"]
    raw_id_fields = ["dataset", "image", "question_item", "run", "updated_by"]
    list_select_related = ["dataset", "image", "run"]
    inlines = [StepInline]


@admin.register(TrajectoryChange)
class TrajectoryChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "trajectory_id", "action", "version", "user", "run", "at"]
    list_filter = ["action"]
    search_fields = ["=trajectory__id"]
    raw_id_fields = ["trajectory", "user", "run"]
    list_select_related = ["user", "run"]


@admin.register(TrajectoryLease)
class TrajectoryLeaseAdmin(admin.ModelAdmin):
    """Leases may be deleted here to free a trajectory held by someone who left."""

    list_display = ["trajectory_id", "user", "dataset", "expires_at", "claimed_at"]
    raw_id_fields = ["trajectory", "user", "dataset"]
    list_select_related = ["user", "dataset"]
