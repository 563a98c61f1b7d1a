from django.contrib import admin

from webapp.probes.models import ProbeSet


@admin.register(ProbeSet)
class ProbeSetAdmin(admin.ModelAdmin):
    list_display = ("set_id", "kind", "split", "seed", "status", "allow_seen", "created_at")
    list_filter = ("status", "kind", "split")
    search_fields = ("set_id", "content_sha256")
    readonly_fields = [f.name for f in ProbeSet._meta.fields]
