from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.core.admin import LargeTableAdmin


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "created_by", "created_at", "browse"]
    search_fields = ["name", "description"]
    raw_id_fields = ["created_by"]
    list_select_related = ["created_by"]
    readonly_fields = ["created_at"]

    @admin.display(description="")
    def browse(self, obj: Dataset) -> str:
        return format_html(
            '<a href="{}">open in FGAM Studio</a>', reverse("catalog:image_grid", args=[obj.name])
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting a dataset cascades to millions of images and regions; the admin's
        # confirmation page would list them all. That is a job for a command, not a click.
        return False


@admin.register(Image)
class ImageAdmin(LargeTableAdmin):
    list_display = ["id", "thumb", "name", "dataset", "size", "format", "split", "source"]
    list_display_links = ["id", "name"]
    list_filter = ["split", "format", "source"]
    # Exact and prefix lookups use indexes; a substring search would scan the table.
    search_fields = ["=sha256", "=source_id", "^file_name"]
    raw_id_fields = ["dataset", "run"]
    list_select_related = ["dataset"]
    readonly_fields = ["sha256", "width", "height", "thumbnail_path", "created_at"]

    @admin.display(description="name")
    def name(self, obj: Image) -> str:
        return str(obj)

    @admin.display(description="size")
    def size(self, obj: Image) -> str:
        return f"{obj.width} x {obj.height}"

    @admin.display(description="")
    def thumb(self, obj: Image) -> str:
        return format_html(
            '<a href="{}"><img src="{}" alt="" loading="lazy" '
            'style="height:40px;image-orientation:none"></a>',
            reverse("catalog:image_detail", args=[obj.pk]),
            reverse("catalog:image_thumb", args=[obj.pk]),
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        # Region deletions must leave history (webapp.regions.services); a cascade would not.
        return False


@admin.register(QuestionItem)
class QuestionItemAdmin(LargeTableAdmin):
    list_display = ["id", "short_question", "image", "has_reference", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["=source_key", "=image__sha256"]
    raw_id_fields = ["image", "run"]
    list_select_related = ["image"]

    @admin.display(description="question")
    def short_question(self, obj: QuestionItem) -> str:
        return obj.question[:100]

    @admin.display(description="reference", boolean=True)
    def has_reference(self, obj: QuestionItem) -> bool:
        return obj.reference is not None
