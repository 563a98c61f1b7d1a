"""Batched runs (pseudo-label, caption): planning, handing batches to Celery, finishing them,
cancel, resume and retry. The per-kind work lives in ``pseudo_label.py`` and ``captioning.py``.

How a run moves:

1. A ``start_*`` service creates the Run (status ``queued``, every parameter recorded) and
   enqueues ``fgam.default.plan_run`` once the transaction commits.
2. ``plan_run`` walks the selected ids in key order (keyset, a chunk at a time, never the whole
   list in memory) and writes ``RunBatch`` rows, each with its fixed list of ids, adding to
   ``run.total`` in the same transaction. It resumes from the last batch it wrote.
3. ``dispatch`` hands at most ``FGAM_RUN_WINDOW`` batches at a time to Celery. Every finished
   batch calls it again, so a run of millions of images keeps a bounded number of messages in
   the broker, and any number of workers on any number of machines share the run.
4. A batch task claims its batch (``UPDATE ... WHERE status IN (open)``), does the work, and in
   one transaction flips the batch to ``done`` (conditional on the attempt it claimed), writes
   its regions or captions idempotently and adds its counts to the run with ``F()``. A
   redelivered batch (worker killed, ``acks_late``) does the same work and writes nothing
   twice; only one finisher counts.
5. When no batch is open the run becomes ``succeeded`` (or ``failed``), again by a conditional
   update, so concurrent finishers agree.

Without a broker every task runs in-process: ``dispatch`` then loops over the batches itself
(a nested ``dispatch`` from inside a batch returns at once, so the stack stays flat).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from webapp.catalog.services import chunked
from webapp.jobs.models import Run, RunBatch

log = logging.getLogger(__name__)

BATCHED_KINDS = (Run.Kind.PSEUDO_LABEL, Run.Kind.CAPTION, Run.Kind.TRAJECTORY)
# Batches written per planning step: one keyset query and one bulk insert each.
PLAN_STEP_BATCHES = 500
# ``run.errors`` keeps the first failures for a quick look; every failure stays on its batch.
MAX_RUN_ERRORS = 100
MAX_ERROR_CHARS = 500


class RunStateError(Exception):
    """The run is not in a state that allows this (cancel a finished run, resume a success)."""


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did: counts, per-item failures and, for LLM captions, token usage."""

    done: int
    failed: int = 0
    errors: tuple[dict, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    summary: dict | None = None


def short(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text[:MAX_ERROR_CHARS]


# --- Planning ---------------------------------------------------------------------------------


def plan_run(*, run_id: int, items: Callable[[Run], Any]) -> Run:
    """Write the run's batches from ``items(run)`` (a queryset), continuing where it stopped.

    ``items`` is the kind's selection; it is walked in primary-key order after the last id
    already planned. Each step locks the run row, so two planners (a redelivered task beside
    the first) never write the same batch index twice.
    """
    run = Run.objects.get(pk=run_id)
    Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING, started_at=timezone.now()
    )
    size = int(run.parameters.get("batch_size") or 1)
    ids_query = items(run).order_by("pk").values_list("pk", flat=True)
    while True:
        with transaction.atomic():
            locked = Run.objects.select_for_update().only("status", "planned_at").get(pk=run_id)
            if locked.status != Run.Status.RUNNING or locked.planned_at is not None:
                break
            last = run.batches.order_by("-index").values("index", "last_id").first()
            after, index = (last["last_id"], last["index"] + 1) if last else (0, 0)
            ids = list(ids_query.filter(pk__gt=after)[: size * PLAN_STEP_BATCHES])
            if not ids:
                Run.objects.filter(pk=run_id).update(planned_at=timezone.now())
                break
            RunBatch.objects.bulk_create(
                RunBatch(run_id=run_id, index=index + n, ids=c, first_id=c[0], last_id=c[-1])
                for n, c in enumerate(chunked(ids, size))
            )
            Run.objects.filter(pk=run_id).update(total=F("total") + len(ids))
        dispatch(run_id=run_id)
    dispatch(run_id=run_id)
    complete_if_finished(run_id=run_id)
    run.refresh_from_db()
    return run


# --- Handing batches to Celery ----------------------------------------------------------------

_local = threading.local()


def dispatch(*, run_id: int) -> int:
    """Enqueue pending batches until ``FGAM_RUN_WINDOW`` are queued or running; return how many.

    Each batch moves ``pending -> queued`` by a conditional update, so two dispatchers never
    enqueue the same batch twice. Messages go out with ``delay_on_commit``.
    """
    if getattr(_local, "dispatching", False):
        return 0  # eager mode: the outer dispatch loop picks up what this batch left
    _local.dispatching = True
    try:
        return _dispatch(run_id)
    finally:
        _local.dispatching = False


def _dispatch(run_id: int) -> int:
    sent = 0
    window = settings.FGAM_RUN_WINDOW
    while True:
        run = Run.objects.filter(pk=run_id).only("kind", "status", "parameters").first()
        if run is None or run.status != Run.Status.RUNNING:
            return sent
        batches = RunBatch.objects.filter(run_id=run_id)
        room = (
            window
            - batches.filter(status__in=(RunBatch.Status.QUEUED, RunBatch.Status.RUNNING)).count()
        )
        if room <= 0:
            return sent
        pending = list(
            batches.filter(status=RunBatch.Status.PENDING)
            .order_by("index")
            .values_list("pk", flat=True)[:room]
        )
        if not pending:
            return sent
        task, queue = batch_task_for(run), batch_queue_for(run)
        options = {"queue": queue} if queue else {}
        for batch_id in pending:
            claimed = RunBatch.objects.filter(pk=batch_id, status=RunBatch.Status.PENDING).update(
                status=RunBatch.Status.QUEUED, queued_at=timezone.now()
            )
            if claimed:
                task.apply_async_on_commit(args=(batch_id,), **options)
                sent += 1


MAX_FILTER_IDS = 10_000


def check_filter(selection: dict | None, *, name: str, keys: frozenset[str]) -> dict:
    """A clean copy of a run's selection filter; ``ValueError`` names the bad key.

    Checks what every filter shares: no unknown keys, ``min_id``/``max_id`` non-negative
    integers, ``ids`` a bounded list of integers. The caller checks its own keys.
    """
    selection = dict(selection or {})
    unknown = set(selection) - keys
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)}; expected {sorted(keys)}")
    for key in ("min_id", "max_id"):
        if key in selection and (not isinstance(selection[key], int) or selection[key] < 0):
            raise ValueError(f"{name}.{key} must be a non-negative integer")
    if "ids" in selection:
        ids = selection["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError(f"{name}.ids must be a list of integers")
        if len(ids) > MAX_FILTER_IDS:
            raise ValueError(f"{name}.ids holds at most {MAX_FILTER_IDS} ids")
    return selection


def filter_ids(queryset: QuerySet, selection: dict) -> QuerySet:
    """Narrow ``queryset`` by the ``ids``, ``min_id`` and ``max_id`` of a checked filter."""
    if "ids" in selection:
        queryset = queryset.filter(pk__in=selection["ids"])
    if "min_id" in selection:
        queryset = queryset.filter(pk__gte=selection["min_id"])
    if "max_id" in selection:
        queryset = queryset.filter(pk__lte=selection["max_id"])
    return queryset


def batch_task_for(run: Run):
    """The Celery task (and so the queue) that runs this run's batches."""
    from webapp.jobs import tasks  # tasks.py imports this module

    if run.kind == Run.Kind.PSEUDO_LABEL:
        return tasks.pseudo_label_batch
    if run.kind == Run.Kind.TRAJECTORY:
        return tasks.trajectory_task_for(run.parameters)
    strategy = run.parameters.get("strategy")
    if strategy == "llm":
        return tasks.caption_batch
    if strategy == "local":
        return tasks.caption_batch_local
    return tasks.caption_batch_template


def batch_queue_for(run: Run) -> str | None:
    """The queue for this run's batches, where it is not the task's own.

    The ``groundingdino-py`` backend lives in a worker environment of its own (it needs
    transformers<5), which listens on ``gpu-gdino``; a plain GPU worker could not load it.
    """
    if run.kind == Run.Kind.PSEUDO_LABEL and run.parameters.get("backend") == "groundingdino-py":
        return "gpu-gdino"
    return None


# --- One batch --------------------------------------------------------------------------------


def claim_batch(*, batch_id: int, task_id: str = "") -> RunBatch | None:
    """Mark the batch running and return it, or None if there is nothing to do.

    Nothing to do: the batch is gone or finished (a redelivery after the finish), or its run
    is no longer running (a cancelled run's queued batches are marked cancelled here).
    """
    batch = RunBatch.objects.select_related("run", "run__dataset").filter(pk=batch_id).first()
    if batch is None:
        return None
    if batch.run.status != Run.Status.RUNNING:
        if batch.run.status == Run.Status.CANCELLED:
            RunBatch.objects.filter(pk=batch_id, status__in=RunBatch.OPEN).update(
                status=RunBatch.Status.CANCELLED
            )
        return None
    claimed = RunBatch.objects.filter(pk=batch_id, status__in=RunBatch.OPEN).update(
        status=RunBatch.Status.RUNNING,
        attempts=F("attempts") + 1,
        started_at=timezone.now(),
        task_id=task_id[:64],
    )
    if not claimed:
        return None
    batch.refresh_from_db(fields=["status", "attempts", "started_at", "task_id"])
    return batch


def finish_batch(
    batch: RunBatch, outcome: BatchOutcome, *, write: Callable[[], None], seconds: float
) -> bool:
    """Record ``outcome`` and run ``write`` in one transaction, if this attempt still owns it.

    Returns False (and writes nothing) when the batch was finished or reset meanwhile, so a
    batch's counts reach the run exactly once however often it ran.
    """
    errors = [{**e, "error": short(e["error"])} for e in outcome.errors]
    with transaction.atomic():
        owned = RunBatch.objects.filter(
            pk=batch.pk, status=RunBatch.Status.RUNNING, attempts=batch.attempts
        ).update(
            status=RunBatch.Status.DONE,
            done=outcome.done,
            failed=outcome.failed,
            errors=errors,
            error="",
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            seconds=round(seconds, 4),
            finished_at=timezone.now(),
        )
        if not owned:
            return False
        write()
        _add_to_run(
            batch.run_id,
            done=outcome.done,
            failed=outcome.failed,
            errors=[{"batch": batch.index, **e} for e in errors],
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
    after_batch(run_id=batch.run_id)
    return True


def fail_batch(*, batch_id: int, error: BaseException | str) -> bool:
    """The batch failed as a whole (the model would not load, a time limit): all its items
    count as failed, with the reason, and the run goes on with its other batches."""
    reason = short(error)
    with transaction.atomic():
        batch = RunBatch.objects.filter(pk=batch_id).only("run_id", "index", "ids").first()
        if batch is None:
            return False
        owned = RunBatch.objects.filter(pk=batch_id, status__in=RunBatch.OPEN).update(
            status=RunBatch.Status.FAILED,
            done=0,
            failed=len(batch.ids),
            error=reason,
            errors=[],
            finished_at=timezone.now(),
        )
        if not owned:
            return False
        _add_to_run(
            batch.run_id,
            failed=len(batch.ids),
            errors=[{"batch": batch.index, "id": None, "error": reason}],
        )
    log.warning("run %s batch %s failed: %s", batch.run_id, batch.index, reason)
    after_batch(run_id=batch.run_id)
    return True


def _add_to_run(
    run_id: int,
    *,
    done: int = 0,
    failed: int = 0,
    errors: list[dict] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> None:
    Run.objects.filter(pk=run_id).update(
        done=F("done") + done,
        failed=F("failed") + failed,
        prompt_tokens=F("prompt_tokens") + prompt_tokens,
        completion_tokens=F("completion_tokens") + completion_tokens,
    )
    if errors:
        # The row is locked by the update above until commit: this read-modify-write is safe.
        current = Run.objects.only("errors").get(pk=run_id).errors or []
        if len(current) < MAX_RUN_ERRORS:
            Run.objects.filter(pk=run_id).update(errors=[*current, *errors][:MAX_RUN_ERRORS])


def after_batch(*, run_id: int) -> None:
    dispatch(run_id=run_id)
    complete_if_finished(run_id=run_id)


def complete_if_finished(*, run_id: int) -> Run | None:
    """Close the run when it is planned and no batch is open; concurrent callers agree."""
    if RunBatch.objects.filter(run_id=run_id, status__in=RunBatch.OPEN).exists():
        return None
    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.status != Run.Status.RUNNING or run.planned_at is None:
        return None
    whole_batch_failed = run.batches.filter(status=RunBatch.Status.FAILED).exists()
    nothing_worked = run.failed > 0 and run.done == 0
    status = Run.Status.FAILED if whole_batch_failed or nothing_worked else Run.Status.SUCCEEDED
    finished_at = timezone.now()
    totals = run.batches.aggregate(seconds=Sum("seconds"))
    summary = {
        **(run.summary or {}),
        "batches": run.batches.count(),
        "batch_seconds": round(totals["seconds"] or 0.0, 3),
        "items_per_second": _rate(run, finished_at),
    }
    if run.kind == Run.Kind.PSEUDO_LABEL:
        summary["regions"] = run.regions.count()
    closed = Run.objects.filter(
        pk=run_id, status=Run.Status.RUNNING, planned_at__isnull=False
    ).update(status=status, finished_at=finished_at, summary=summary)
    if not closed:
        return None
    run.refresh_from_db()
    return run


def _rate(run: Run, end) -> float | None:
    if not run.started_at:
        return None
    seconds = (end - run.started_at).total_seconds()
    processed = run.done + run.failed
    return round(processed / seconds, 3) if seconds > 0 and processed else None


# --- Cancel, resume, retry --------------------------------------------------------------------


def _check_batched(run: Run) -> None:
    if run.kind not in BATCHED_KINDS:
        raise RunStateError(f"a {run.kind} run cannot be cancelled, resumed or retried")


def cancel_run(*, run: Run) -> Run:
    """Stop a queued or running run: batches not yet started are cancelled, and a batch task
    that arrives later sees the run's status and does nothing. Batches already running finish
    and count."""
    _check_batched(run)
    with transaction.atomic():
        cancelled = Run.objects.filter(
            pk=run.pk, status__in=(Run.Status.QUEUED, Run.Status.RUNNING)
        ).update(status=Run.Status.CANCELLED, finished_at=timezone.now())
        if not cancelled:
            raise RunStateError(f"run {run.pk} is {run.status}; only an open run can be cancelled")
        RunBatch.objects.filter(
            run=run, status__in=(RunBatch.Status.PENDING, RunBatch.Status.QUEUED)
        ).update(status=RunBatch.Status.CANCELLED)
    run.refresh_from_db()
    return run


def resume_run(*, run: Run) -> Run:
    """Go on with a cancelled, failed or stalled run: every unfinished batch is handed out again.

    Batches marked queued or running are reset too: after a crash or a lost broker message
    nobody may be working on them. If someone still is, the two attempts write the same rows
    (idempotent writes) and only the later claim may record its counts.
    """
    _check_batched(run)
    with transaction.atomic():
        resumed = Run.objects.filter(
            pk=run.pk,
            status__in=(Run.Status.CANCELLED, Run.Status.FAILED, Run.Status.RUNNING),
        ).update(status=Run.Status.RUNNING, finished_at=None)
        if not resumed:
            raise RunStateError(f"run {run.pk} is {run.status}; it cannot be resumed")
        RunBatch.objects.filter(
            run=run,
            status__in=(RunBatch.Status.CANCELLED, RunBatch.Status.QUEUED, RunBatch.Status.RUNNING),
        ).update(status=RunBatch.Status.PENDING)
        Run.objects.filter(pk=run.pk, started_at__isnull=True).update(started_at=timezone.now())
    _continue(run)
    run.refresh_from_db()
    return run


def retry_failed(*, run: Run) -> int:
    """Put every failed item of the run into new batches and hand them out; return the count.

    Failed whole batches become ``retried`` and their ids go again; a finished batch with
    failed items keeps its done count and gives up its failed ids. The run's failed count and
    its error list are reduced accordingly, so a success on retry leaves no stale failure.
    """
    _check_batched(run)
    if run.status == Run.Status.QUEUED:
        raise RunStateError(f"run {run.pk} has not started yet")
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        failed_batches = list(
            RunBatch.objects.filter(run=run)
            .filter(Q(status=RunBatch.Status.FAILED) | Q(status=RunBatch.Status.DONE, failed__gt=0))
            .order_by("index")
        )
        ids: list[int] = []
        for batch in failed_batches:
            if batch.status == RunBatch.Status.FAILED:
                ids.extend(batch.ids)
            else:
                ids.extend(e["id"] for e in batch.errors if e.get("id") is not None)
        if not ids:
            return 0
        RunBatch.objects.filter(pk__in=[b.pk for b in failed_batches]).update(
            status=_case_retried(), failed=0, errors=[]
        )
        last = RunBatch.objects.filter(run=run).order_by("-index").values_list("index", flat=True)
        index = last[0] + 1
        size = int(locked.parameters.get("batch_size") or 1)
        RunBatch.objects.bulk_create(
            RunBatch(run=run, index=index + n, ids=c, first_id=min(c), last_id=max(c))
            for n, c in enumerate(chunked(ids, size))
        )
        Run.objects.filter(pk=run.pk).update(
            failed=F("failed") - len(ids),
            errors=[],
            status=Run.Status.RUNNING,
            finished_at=None,
        )
    _continue(run)
    return len(ids)


def _case_retried() -> Case:
    return Case(
        When(status=RunBatch.Status.FAILED, then=Value(RunBatch.Status.RETRIED)),
        default=F("status"),
    )


def _continue(run: Run) -> None:
    if Run.objects.filter(pk=run.pk, planned_at__isnull=True).exists():
        from webapp.jobs.tasks import plan_run as plan_task

        plan_task.delay_on_commit(run.pk)
    else:
        after_batch(run_id=run.pk)


# --- Reading ----------------------------------------------------------------------------------


def failures(run: Run, *, limit: int = 100) -> list[dict]:
    """The run's failed items with their reasons, batch by batch, at most ``limit``."""
    rows: list[dict] = []
    batches = (
        RunBatch.objects.filter(run=run)
        .filter(Q(status=RunBatch.Status.FAILED) | Q(failed__gt=0))
        .order_by("index")
        .only("index", "status", "ids", "errors", "error")
    )
    for batch in batches.iterator(chunk_size=100):
        for entry in _batch_failures(batch):
            rows.append(entry)
            if len(rows) >= limit:
                return rows
    return rows


def _batch_failures(batch: RunBatch) -> Iterator[dict]:
    if batch.status == RunBatch.Status.FAILED:
        for item in batch.ids:
            yield {"batch": batch.index, "id": item, "error": batch.error}
    else:
        for entry in batch.errors:
            yield {"batch": batch.index, "id": entry.get("id"), "error": entry.get("error", "")}


def run_cost(run: Run) -> float | None:
    """LLM cost from the run's tokens and the prices recorded when it started (None: no price)."""
    from training.llm import estimate_cost

    prices = run.parameters.get("prices") or {}
    return estimate_cost(
        run.prompt_tokens,
        run.completion_tokens,
        prompt_price_per_1k=prices.get("prompt_per_1k"),
        completion_price_per_1k=prices.get("completion_per_1k"),
    )
