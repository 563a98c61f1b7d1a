"""Following a run from the command line: a tqdm bar fed by polling the database."""

from __future__ import annotations

import time
from typing import TextIO

from tqdm import tqdm

from webapp.jobs.models import Run
from webapp.jobs.services import failures

FAILURES_SHOWN = 20


def follow_run(
    run: Run, *, stream: TextIO, poll_s: float = 1.0, timeout_s: float | None = None
) -> Run:
    """Show the run's progress until it ends (or ``timeout_s`` passes); return it as it ends.

    The bar counts items done and failed out of the total, which grows while the run is
    planned. tqdm hides itself when ``stream`` is not a terminal (``disable=None``).
    """
    unit = {Run.Kind.PSEUDO_LABEL: "img", Run.Kind.TRAJECTORY: "question"}.get(run.kind, "region")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tqdm(
        total=run.total or None, desc=f"{run.kind} #{run.pk}", unit=unit, file=stream, disable=None
    ) as bar:
        while True:
            run.refresh_from_db()
            if run.total and bar.total != run.total:
                bar.total = run.total
            bar.update(run.done + run.failed - bar.n)
            bar.set_postfix(failed=run.failed, status=run.status, refresh=False)
            if not run.is_open:
                return run
            if deadline is not None and time.monotonic() > deadline:
                return run
            time.sleep(poll_s)


def describe_end(run: Run) -> list[str]:
    """Lines that sum a finished run up, with its first failures."""
    rate = run.items_per_second
    lines = [
        f"run {run.pk} {run.status}: {run.done} done, {run.failed} failed of {run.total}"
        + (f" ({rate:.2f}/s)" if rate else "")
    ]
    if run.prompt_tokens or run.completion_tokens:
        lines.append(f"tokens: {run.prompt_tokens} prompt, {run.completion_tokens} completion")
    for entry in failures(run, limit=FAILURES_SHOWN):
        lines.append(f"  batch {entry['batch']} item {entry['id']}: {entry['error']}")
    return lines
