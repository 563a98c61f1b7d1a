"""``read_snapshot()``: one transaction for a long series of reads that must agree with each
other (an export, a probe-set build), REPEATABLE READ on PostgreSQL.

``SET TRANSACTION`` must be a transaction's first statement, so the isolation level is only set
when this block starts the transaction, not inside an outer one (a test's wrapper, a caller's
``atomic``), where the outer transaction's level holds.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction


class read_snapshot:
    def __enter__(self) -> None:
        outermost = not connection.in_atomic_block
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def __exit__(self, *exc: Any) -> None:
        self._atomic.__exit__(*exc)
