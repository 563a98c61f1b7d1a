"""Progress of a version being cut: rows written out of the total, and the phase.

The export reads everything inside one REPEATABLE READ transaction, so a progress update made
on that connection would stay invisible until the export ends. ``ExportProgress`` therefore
writes from a thread of its own (Django gives each thread its own connection, in autocommit),
and only the latest figures, at most once per ``every_s``: the export never waits on it and
never writes per row. A ``callback`` (the command line's progress bar) gets the same figures
at the same bounded rate, on the export's thread.

On SQLite the export's transaction holds the database's write lock (``transaction_mode``
IMMEDIATE), so the figures reach the row only when the export ends; an update that fails is
logged and replaced by the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from django.db import DatabaseError, connection
from django.utils import timezone

from webapp.exports.models import DatasetVersion

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]  # (phase, done, total)


class ExportProgress:
    """Counts rows (regions, questions, trajectories) and publishes them at a bounded rate."""

    def __init__(
        self,
        version_id: int,
        *,
        callback: ProgressCallback | None = None,
        every_s: float = 1.0,
    ) -> None:
        self.version_id = version_id
        self.callback = callback
        self.every_s = every_s
        self.phase = ""
        self.done = 0
        self.total = 0
        self.updates = 0  # how many times figures were published (tests check the bound)
        self._next_at = 0.0
        self._latest: tuple[str, int, int] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._writer, name="export-progress", daemon=True)
        self._thread.start()

    def start_phase(self, phase: str, *, total: int | None = None) -> None:
        """A new phase is always published at once (it is rare and tells what is going on)."""
        self.phase = phase
        if total is not None:
            self.total = total
        self._publish()

    def advance(self, rows: int) -> None:
        """``rows`` more written; published only when ``every_s`` has passed since the last."""
        self.done += rows
        if time.monotonic() >= self._next_at:
            self._publish()

    def _publish(self) -> None:
        self._next_at = time.monotonic() + self.every_s
        self.updates += 1
        figures = (self.phase, self.done, max(self.total, self.done))
        with self._lock:
            self._latest = figures
        self._wake.set()
        if self.callback is not None:
            self.callback(*figures)

    def _writer(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                with self._lock:
                    figures, self._latest = self._latest, None
                if figures is not None:
                    self._save(*figures)
                if self._stop:
                    return
        finally:
            connection.close()  # this thread's own connection

    def _save(self, phase: str, done: int, total: int) -> None:
        try:
            DatasetVersion.objects.filter(pk=self.version_id).update(
                progress_phase=phase,
                progress_done=done,
                progress_total=total,
                progress_at=timezone.now(),
            )
        except DatabaseError as exc:
            # Figures are best effort: the next ones replace these, and the version row gets
            # the final ones when the export ends. On SQLite the export's own transaction
            # holds the write lock, so updates only land after it.
            log.warning("version %s: progress not saved: %s", self.version_id, exc)

    def close(self) -> None:
        """Publish the last figures and wait for the writer thread to finish."""
        if self._stop:
            return
        self._stop = True
        with self._lock:
            self._latest = (self.phase, self.done, max(self.total, self.done))
        self._wake.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> ExportProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
