"""The export's chunked region reader: the same rows as Django gives, and a clean stop."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from tests.catalog.factories import DatasetFactory, RegionFactory, stored_image
from webapp.exports.rows import ReadAhead, chunked_rows
from webapp.exports.selection import parse_filters, region_queryset
from webapp.exports.writing import REGION_COLUMNS
from webapp.regions.models import Region


@pytest.fixture
def regions(media_root):
    dataset = DatasetFactory(name="rows")
    for n in range(3):
        image = stored_image(dataset, width=200, height=100, captions=[f"scene {n}"])
        RegionFactory(
            image=image, x0=0.0, y0=1.25, x1=150.5, y1=99.0, phrase='a "quoted" café',
            caption="line one\nline two \u2028 \U0001f697", status=Region.Status.ACCEPTED,
        )  # fmt: skip
        RegionFactory(
            image=image, x0=3.0, y0=4.0, x1=5.0, y1=6.0, phrase="tree", caption="a tree",
            origin=Region.Origin.DETECTOR, score=0.1 + 0.2, status=Region.Status.ACCEPTED,
        )  # fmt: skip
    return dataset


def _queryset(dataset):
    return (
        region_queryset([dataset.pk], parse_filters({}))
        .order_by("image__sha256", "image_id", "id")
        .values_list(*REGION_COLUMNS)
    )


@pytest.mark.django_db
def test_chunks_are_the_rows_django_gives_with_the_same_types(regions):
    expected = list(_queryset(regions))
    assert len(expected) == 6
    with transaction.atomic(), chunked_rows(_queryset(regions), chunk_size=4) as chunks:
        got = list(chunks)
    assert [len(c) for c in got] == [4, 2]
    rows = [row for chunk in got for row in chunk]
    assert rows == expected
    assert [tuple(map(type, r)) for r in rows] == [tuple(map(type, r)) for r in expected]
    assert {r[-2] for r in rows} == {None, 0.1 + 0.2}  # the score, null and full precision


@pytest.mark.django_db
def test_leaving_the_block_midway_closes_the_server_side_cursor(regions):
    with transaction.atomic():
        with (
            pytest.raises(RuntimeError, match="writer failed"),
            chunked_rows(_queryset(regions), chunk_size=1) as chunks,
        ):
            next(chunks)
            raise RuntimeError("writer failed")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_cursors")
                assert cursor.fetchone() == (0,)
        # The transaction is still usable: nothing was left half-read on the connection.
        assert len(list(_queryset(regions))) == 6


def test_read_ahead_gives_the_chunks_in_order_and_stays_bounded():
    fetched = []

    def fetch():
        fetched.append(len(fetched))
        return [len(fetched)] if len(fetched) <= 20 else []

    reader = ReadAhead(fetch, depth=2)
    time.sleep(0.3)
    # Nothing consumed yet: the thread holds the chunk it fetched and waits for room.
    assert len(fetched) <= 3
    assert [c[0] for c in reader] == list(range(1, 21))
    reader.stop()


def test_read_ahead_raises_the_fetch_error_in_the_consumer():
    calls = iter([[1], [2]])

    def fetch():
        try:
            return next(calls)
        except StopIteration:
            raise ConnectionError("server closed the connection") from None

    reader = ReadAhead(fetch)
    got = []
    with pytest.raises(ConnectionError, match="server closed"):
        for chunk in reader:
            got.extend(chunk)
    assert got == [1, 2]
    reader.stop()


def test_stopping_a_reader_blocked_on_a_full_queue_returns_at_once():
    reader = ReadAhead(lambda: [0], depth=1)
    time.sleep(0.2)
    start = time.monotonic()
    reader.stop()
    assert time.monotonic() - start < 2
    assert not any(t.name == "export-read-ahead" and t.is_alive() for t in threading.enumerate())
