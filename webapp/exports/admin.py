from django.contrib import admin

from webapp.exports.models import DatasetVersion, TrainingJob, Webhook, WebhookDelivery


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "content_sha256", "size_bytes", "created_at")
    list_filter = ("status",)
    # Versions are immutable: the admin shows them, the export service writes them.
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "version", "status", "last_step", "created_at")
    list_filter = ("status", "kind")


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("url", "events", "active", "created_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "webhook", "event", "status", "attempts", "response_code", "created_at")
    list_filter = ("status", "event")
