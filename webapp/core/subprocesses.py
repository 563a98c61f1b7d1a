"""``run_watched``: a job's program run as a subprocess, followed until it ends.

Training jobs and benchmark jobs both run ``python -m training ...`` this way. The program
runs in its own session, so a cancel stops the program and whatever it started (torchrun's
ranks, data loader workers): SIGTERM first, then SIGKILL after ``grace_s``. The output goes
to ``log_path``. If the watcher itself breaks (the database went away, the task reached its
time limit), the program is killed, since nothing could follow it any more, and the error is
raised again after ``on_watcher_error`` has recorded it, so that no job is left "running".
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


class CouldNotStart(RuntimeError):
    """The program is missing or not executable; nothing ran."""


@dataclass(frozen=True)
class Finished:
    returncode: int
    cancelled: bool


def run_watched(
    command: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str],
    on_tick: Callable[[], None],
    cancelling: Callable[[], bool],
    on_watcher_error: Callable[[BaseException], None],
    poll_s: float,
    grace_s: float = 30.0,
) -> Finished:
    """Run ``command`` from the project root with its output appended to ``log_path``. Every
    ``poll_s`` it calls ``on_tick`` (store progress), then asks ``cancelling()``.

    ``CouldNotStart`` when the program cannot be started (an error of the watch itself is
    raised as it is, after ``on_watcher_error``)."""
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=settings.BASE_DIR,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            raise CouldNotStart(str(exc)) from exc
        cancelled = False
        try:
            while process.poll() is None:
                time.sleep(poll_s)
                on_tick()
                if not cancelled and cancelling():
                    cancelled = True
                    _stop(process, grace_s)
        except BaseException as exc:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            on_watcher_error(exc)
            raise
    return Finished(returncode=process.returncode, cancelled=cancelled)


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
