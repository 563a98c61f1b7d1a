"""Admin site settings and what the other apps' admins share for very large tables."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

admin.site.site_header = "FGAM Studio admin"
admin.site.site_title = "FGAM Studio admin"
admin.site.index_title = "Records"

# Below this many rows an exact COUNT(*) is cheap enough.
ESTIMATE_ABOVE = 100_000


class LargeTablePaginator(Paginator):
    """Exact counts for filtered or small lists; the planner's estimate for a whole big table.

    ``COUNT(*)`` over hundreds of millions of rows takes minutes on PostgreSQL, and the admin
    changelist asks for it on every page. Unfiltered lists use ``pg_class.reltuples`` instead.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is not None and not query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                if row and row[0] > ESTIMATE_ABOVE:
                    return int(row[0])
        return super().count


class LargeTableAdmin(admin.ModelAdmin):
    """Changelists that stay fast on tables with millions of rows."""

    paginator = LargeTablePaginator
    show_full_result_count = False
    list_per_page = 50


class ReadOnlyAdmin(LargeTableAdmin):
    """Records that change only through their services (which keep history) are shown here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
