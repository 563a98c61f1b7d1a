"""Bulk inserts that skip rows already there: COPY on PostgreSQL, bulk_create elsewhere.

On PostgreSQL the rows stream through psycopg 3's ``COPY`` into a temporary table shaped like
the target columns, and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` moves them over.
That is a fixed handful of statements whatever the row count, and the unique constraints
(image sha256 per dataset, source_key per image) make a rerun insert nothing twice. The
values that are the same for every row (run, timestamps, defaults the ORM would fill in) are
not copied per row but written once into the ``SELECT`` as typed parameters.

Rows that cannot conflict (``fresh``: regions of images this very import created) skip the
temporary table and go straight into the target with ``COPY``, constants and all: it saves
writing every row twice and the per-row conflict check, about a third of the insert time.

SQLite, the quick start's database, takes ``bulk_create(ignore_conflicts=True)`` in batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connection, models
from psycopg.types.json import Jsonb


def insert_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Iterable[tuple],
    constants: dict[str, Any],
    *,
    fresh: bool = False,
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order, by attname) plus ``constants`` per row.

    Rows that would break a unique constraint are skipped silently: they exist already.
    ``fresh=True`` promises that none can conflict, which allows the direct ``COPY``.
    """
    if connection.vendor == "postgresql" and fresh:
        _copy_direct(model, columns, rows, constants)
    elif connection.vendor == "postgresql":
        _copy_insert(model, columns, rows, constants)
    else:
        _bulk_create(model, columns, rows, constants)


def _bulk_create(model, columns, rows, constants) -> None:
    batch: list[models.Model] = []
    size = settings.FGAM_IMPORT_BATCH_SIZE
    for row in rows:
        batch.append(model(**dict(zip(columns, row, strict=True)), **constants))
        if len(batch) >= size:
            model.objects.bulk_create(batch, batch_size=size, ignore_conflicts=True)
            batch = []
    if batch:
        model.objects.bulk_create(batch, batch_size=size, ignore_conflicts=True)


def _json_positions(model, columns) -> list[int]:
    return [
        i for i, c in enumerate(columns) if isinstance(model._meta.get_field(c), models.JSONField)
    ]


def _write_rows(copy, rows, json_positions, tail: tuple = ()) -> None:
    if json_positions:
        for row in rows:
            row = list(row)
            for i in json_positions:
                row[i] = Jsonb(row[i])
            copy.write_row((*row, *tail))
    elif tail:
        for row in rows:
            copy.write_row((*row, *tail))
    else:
        for row in rows:
            copy.write_row(row)


def _copy_direct(model, columns, rows, constants) -> None:
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in (*columns, *constants))
    tail = tuple(
        Jsonb(v) if isinstance(model._meta.get_field(c), models.JSONField) else v
        for c, v in constants.items()
    )
    statement = f"COPY {quote(model._meta.db_table)} ({names}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        _write_rows(copy, rows, _json_positions(model, columns), tail)


def _copy_insert(model, columns, rows, constants) -> None:
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    temp = quote(f"fgam_import_{meta.db_table}")
    copied = ", ".join(quote(c) for c in columns)
    fixed = ", ".join(quote(c) for c in constants)
    # Explicit casts: an untyped parameter in a SELECT list would be taken as text.
    casts = ", ".join(f"CAST(%s AS {meta.get_field(c).db_type(connection)})" for c in constants)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {copied} FROM {table} WITH NO DATA"
        )
        with cursor.copy(f"COPY {temp} ({copied}) FROM STDIN") as copy:
            _write_rows(copy, rows, _json_positions(model, columns))
        cursor.execute(
            f"INSERT INTO {table} ({copied}, {fixed}) SELECT {copied}, {casts} FROM {temp} "
            "ON CONFLICT DO NOTHING",
            list(constants.values()),
        )
        cursor.execute(f"DROP TABLE {temp}")
