"""Query expressions the catalog's pages and API share."""

from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce


def count_of(queryset, link: str) -> Coalesce:
    """A correlated ``COUNT(*)`` of ``queryset`` rows whose ``link`` is the outer row.

    Evaluated only for the rows of the page being shown, so a list costs one query however
    many rows the counted table holds.
    """
    counted = (
        queryset.filter(**{link: OuterRef("pk")})
        .order_by()
        .values(link)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)
