"""Regions are read-only here: every change must go through ``webapp.regions.services`` so its
version and history stay whole. Reviewers edit in the UI or through the API."""

from __future__ import annotations

from django.contrib import admin

from webapp.core.admin import ReadOnlyAdmin
from webapp.regions.models import Region, RegionChange


@admin.register(Region)
class RegionAdmin(ReadOnlyAdmin):
    list_display = ["id", "phrase", "image", "origin", "status", "score", "flagged", "version"]
    list_filter = ["status", "origin", "flagged"]
    search_fields = ["=id", "^phrase"]
    raw_id_fields = ["image", "run", "updated_by"]
    list_select_related = ["image"]


@admin.register(RegionChange)
class RegionChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "region_id", "action", "version", "user", "run", "at"]
    list_filter = ["action"]
    search_fields = ["=region__id"]
    raw_id_fields = ["region", "user", "run"]
    list_select_related = ["user", "run"]
