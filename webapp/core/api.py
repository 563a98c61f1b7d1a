"""What the REST API of every app shares: strict, validated query-parameter filters, and the
answer to ``OPTIONS``."""

from __future__ import annotations

from typing import ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.metadata import BaseMetadata
from rest_framework.request import Request

# Parameters the pagination and the renderers read; never treated as filters.
RESERVED_PARAMS = frozenset({"cursor", "page_size", "format"})
# The largest primary key a database column holds; a larger id would be a 500 on SQLite.
MAX_ID = 2**63 - 1


class FilteredListMixin:
    """Filter a list through a serializer of query parameters; a bad one answers 400.

    A typo in an id or a status must not quietly return an empty or unfiltered list, and must
    never reach the database as a 500: the serializer validates every parameter, and an unknown
    one is refused, each error keyed by the parameter's name. Empty values mean "no filter",
    as an HTML form sends them. ``filter_lookups`` maps a parameter to its ORM lookup when the
    two differ (``dataset`` -> ``image__dataset_id``).
    """

    filter_serializer_class: ClassVar[type[serializers.Serializer] | None] = None
    filter_lookups: ClassVar[dict[str, str]] = {}
    # Set by the viewset this is mixed into.
    action: str | None
    request: Request

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        if self.action != "list" or self.filter_serializer_class is None:
            return queryset
        params = {
            key: value
            for key, value in self.request.query_params.items()
            if key not in RESERVED_PARAMS and value != ""
        }
        filters = self.filter_serializer_class(data=params)
        known = set(filters.fields)
        unknown = sorted(set(params) - known)
        if unknown:
            expected = ", ".join(sorted(known | RESERVED_PARAMS))
            raise ValidationError(
                {
                    name: [f"Unknown query parameter; expected one of: {expected}."]
                    for name in unknown
                }
            )
        filters.is_valid(raise_exception=True)
        lookups = {self.filter_lookups.get(k, k): v for k, v in filters.validated_data.items()}
        return queryset.filter(**lookups)


def id_param(help_text: str) -> serializers.IntegerField:
    """An optional positive integer id parameter; ``?dataset=abc`` says "dataset: ..."."""
    return serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text=help_text
    )


BAD_QUERY = OpenApiResponse(
    description="A query parameter is invalid or unknown; each error is keyed by its name, "
    'e.g. {"status": ["\\"done\\" is not a valid choice."]}.'
)


def list_schema(serializer: type[serializers.Serializer], filters: type[serializers.Serializer]):
    """``extend_schema`` for a filtered list: its query parameters and its 400 answer."""
    return extend_schema(
        parameters=[filters], responses={200: serializer(many=True), 400: BAD_QUERY}
    )


class RouteMetadata(BaseMetadata):
    """``OPTIONS``: the route's name, description and formats; its fields are in /api/schema/.

    DRF's default also builds each write serializer to describe its fields, which answers 500
    on views that pick their serializer per action or have none (the rater's seats).
    """

    def determine_metadata(self, request: Request, view) -> dict:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
        }
