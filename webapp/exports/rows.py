"""The export's one large read, region rows, in chunks fetched ahead of the writer.

On PostgreSQL the rows come through a binary server-side cursor, opened on the connection of
the export's snapshot. In binary, floats and ints arrive as machine values, which costs the
client about half the CPU of Django's text cursor. A thread stays ``depth`` chunks ahead:
psycopg releases the GIL while it waits on the socket, so while the writer serialises one chunk,
PostgreSQL is already producing the next on the other core. The rows are plain tuples, as
``values_list`` gives them, because the region columns the export reads have no Django
converters; ``tests/exports/test_rows.py`` checks that both paths give the same tuples.

On other databases (SQLite in the quick start) the rows come from Django's iterator on the
calling thread: a SQLite connection may not be shared between threads, and there is no server
whose work could overlap with the writer's.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from django.db import connection
from django.db.models import QuerySet

_POLL_S = 0.1  # how often a blocked reader thread looks whether it was told to stop


@contextmanager
def chunked_rows(
    queryset: QuerySet, *, chunk_size: int, depth: int = 2
) -> Iterator[Iterator[list[tuple]]]:
    """Yield an iterator over lists of up to ``chunk_size`` rows of a ``values_list`` queryset.

    Leaving the block, normally or by an exception, stops the reader and closes the cursor,
    inside the caller's transaction (a server-side cursor cannot be closed after it ends).
    """
    if connection.vendor != "postgresql":
        rows = queryset.iterator(chunk_size=chunk_size)
        try:
            yield _batched(rows, chunk_size)
        finally:
            rows.close()
        return
    sql, params = queryset.query.sql_with_params()
    connection.ensure_connection()
    cursor = connection.connection.cursor(name=f"fgam_export_{uuid.uuid4().hex}", binary=True)
    try:
        cursor.execute(sql, params)
        ahead = ReadAhead(lambda: cursor.fetchmany(chunk_size), depth=depth)
        try:
            yield iter(ahead)
        finally:
            ahead.stop()
    finally:
        cursor.close()


def _batched(rows: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    while chunk := list(islice(rows, size)):
        yield chunk


class ReadAhead:
    """Calls ``fetch`` on a thread of its own until it returns an empty list, keeping at most
    ``depth`` results waiting. Iterating gives the results in order; an exception raised by
    ``fetch`` is raised by the iteration instead.

    >>> chunks = iter([[1, 2], [3], []])
    >>> reader = ReadAhead(lambda: next(chunks))
    >>> list(reader)
    [[1, 2], [3]]
    >>> reader.stop()
    """

    def __init__(self, fetch: Callable[[], list[Any]], *, depth: int = 2) -> None:
        self._fetch = fetch
        self._queue: queue.Queue[list[Any] | BaseException] = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="export-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                chunk = self._fetch()
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the consumer, who raises it
            self._put(exc)

    def _put(self, item: list[Any] | BaseException) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item

    def stop(self) -> None:
        """Tell the thread to stop and wait for it: it finishes the fetch under way, if any."""
        self._stopping.set()
        self._thread.join()
