"""Trajectory runs: the answer-critique-revise loop (preprint §3.3) over a dataset's questions.

For each selected ``QuestionItem``, M answers (or a seeded error is injected into the item's
reference answer), the RM critiques with the image's accepted regions as evidence, and M
revises, at most K times (``workers.trajectories`` over ``training.stage2.loop.rectify``).
Each finished item becomes a ``Trajectory`` with its steps, written by
``webapp.trajectories.generation``.

M and the RM are each named by a spec (``training.stage2.generators``): ``URL#MODEL`` for an
OpenAI-compatible endpoint, anything else a local ``transformers`` checkpoint. A run with a
local model goes to the ``gpu`` queue (one process per GPU, the model loaded once per
process); a run of two endpoints to the ``llm`` queue, where ``concurrency`` items are in
flight at once.

Batches move through ``webapp.jobs.services`` like every batched run: planned over item ids,
claimed, finished in one transaction that writes the trajectories and adds the counts. The
run keeps the prompt versions in ``parameters`` and a Table-4 latency summary (mean M ms,
mean RM ms, steps, ms per query by number of revisions) in ``summary``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, QuerySet

from training.llm import RetryPolicy
from training.stage2.generation import Generator
from training.stage2.generators import is_endpoint_spec, make_generator
from training.stage2.prompts import prompt_versions
from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.catalog.thumbnails import NoStoredBytes, read_stored_bytes
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import (
    BatchOutcome,
    check_filter,
    claim_batch,
    filter_ids,
    finish_batch,
)
from webapp.regions.models import Region
from webapp.trajectories.generation import Generated, existing_keys, source_key, write_generated
from workers.seeded_errors import SEEDED_ERROR_TYPES
from workers.trajectories import (
    ItemOutcome,
    TrajectoryItem,
    add_totals,
    latency_means,
    latency_totals,
    run_batch,
)

QUESTION_FILTER_KEYS = frozenset({"ids", "min_id", "max_id", "split", "source", "image_ids"})
MAX_K = 10
# The object injection draws from this many of the dataset's most frequent phrases.
VOCABULARY_SIZE = 1000
DTYPES = {"auto": "auto", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def check_question_filter(question_filter: dict | None) -> dict:
    """A clean copy of ``question_filter``; ``ValueError`` names the bad key."""
    selection = check_filter(question_filter, name="question_filter", keys=QUESTION_FILTER_KEYS)
    if "split" in selection and selection["split"] not in Image.Split.values:
        raise ValueError(f"question_filter.split: {selection['split']!r} is not a split")
    if "source" in selection and not isinstance(selection["source"], str):
        raise ValueError("question_filter.source must be a string")
    if "image_ids" in selection:
        ids = selection["image_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError("question_filter.image_ids must be a list of integers")
    return selection


def selected_questions(run: Run) -> QuerySet[QuestionItem]:
    """The question items a trajectory run covers: its dataset's, filtered; with a reference
    answer only when the run seeds errors (there is nothing to seed otherwise)."""
    items = QuestionItem.objects.filter(image__dataset_id=run.dataset_id)
    selection = run.parameters.get("question_filter") or {}
    if "split" in selection:
        items = items.filter(image__split=selection["split"])
    if "source" in selection:
        items = items.filter(source=selection["source"])
    if "image_ids" in selection:
        items = items.filter(image_id__in=selection["image_ids"])
    if run.parameters.get("seeded_errors"):
        items = items.filter(reference__isnull=False).exclude(reference="")
    return filter_ids(items, selection)


def default_m_spec() -> str:
    return f"{settings.FGAM_LLM_BASE_URL}#{settings.FGAM_MLLM_MODEL}"


def default_rm_spec() -> str:
    return f"{settings.FGAM_LLM_BASE_URL}#{settings.FGAM_RM_MODEL}"


def start_trajectory_run(
    *,
    dataset: Dataset,
    m: str = "",
    rm: str = "",
    k: int = 3,
    seeded_errors: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    concurrency: int = 16,
    batch_size: int | None = None,
    timeout: float | None = None,
    max_retries: int = 5,
    max_new_tokens: int = 512,
    m_vision: bool = True,
    rm_vision: bool = False,
    device: str = "",
    dtype: str = "",
    question_filter: dict | None = None,
    object_vocabulary: list[str] | None = None,
    user=None,
) -> Run:
    """Record a trajectory run and queue it; ``ValueError`` names a bad parameter.

    ``m`` and ``rm`` default to the settings' endpoint with ``FGAM_MLLM_MODEL`` and
    ``FGAM_RM_MODEL``. ``seeded_errors`` (any of object, attribute, spatial, reasoning) makes
    every A_0 the item's reference answer with one injected error of one of these types
    (chosen per item by ``seed``); empty means M writes A_0. ``object_vocabulary`` overrides
    the phrases the object injection draws from (default: the dataset's most frequent).
    """
    from webapp.jobs.tasks import plan_run

    m, rm = (m or "").strip() or default_m_spec(), (rm or "").strip() or default_rm_spec()
    for name, value in (("m", m), ("rm", rm)):
        if value.startswith(("http://", "https://")) and not is_endpoint_spec(value):
            raise ValueError(f"{name}: an endpoint is written URL#MODEL, got {value!r}")
    if not 0 <= int(k) <= MAX_K:
        raise ValueError(f"k must be between 0 and {MAX_K}")
    seeded = list(dict.fromkeys(seeded_errors or ()))
    unknown = [t for t in seeded if t not in SEEDED_ERROR_TYPES]
    if unknown:
        raise ValueError(
            f"seeded_errors: {', '.join(map(repr, unknown))} not among "
            f"{', '.join(SEEDED_ERROR_TYPES)}"
        )
    local = not (is_endpoint_spec(m) and is_endpoint_spec(rm))
    batch_size = batch_size or (8 if local else 64)
    if not 1 <= int(batch_size) <= 4096:
        raise ValueError("batch_size must be between 1 and 4096")
    if not 1 <= int(concurrency) <= 512:
        raise ValueError("concurrency must be between 1 and 512")
    if not 0 <= int(max_retries) <= 20:
        raise ValueError("max_retries must be between 0 and 20")
    if not 1 <= int(max_new_tokens) <= 8192:
        raise ValueError("max_new_tokens must be between 1 and 8192")
    dtype = dtype or settings.FGAM_DTYPE
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    if object_vocabulary is not None and not all(isinstance(p, str) for p in object_vocabulary):
        raise ValueError("object_vocabulary must be a list of phrases")
    params: dict[str, Any] = {
        "m": m,
        "rm": rm,
        "k": int(k),
        "queue": "gpu" if local else "llm",
        "seeded_errors": seeded,
        "seed": int(seed),
        "concurrency": int(concurrency),
        "batch_size": int(batch_size),
        "timeout": float(timeout or settings.FGAM_LLM_TIMEOUT),
        "max_retries": int(max_retries),
        "max_new_tokens": int(max_new_tokens),
        "m_vision": bool(m_vision),
        "rm_vision": bool(rm_vision),
        "device": device or settings.FGAM_DEVICE,
        "dtype": dtype,
        "question_filter": check_question_filter(question_filter),
        "prompt_versions": prompt_versions(),
        # Kept with the run so its cost stays what it was when it ran (``run_cost``); the
        # settings' prices are those of the configured endpoint.
        "prices": {
            "prompt_per_1k": settings.FGAM_LLM_PRICE_PROMPT_PER_1K,
            "completion_per_1k": settings.FGAM_LLM_PRICE_COMPLETION_PER_1K,
        },
    }
    if object_vocabulary is not None:
        params["object_vocabulary"] = sorted({p.strip() for p in object_vocabulary if p.strip()})
    run = Run.objects.create(
        kind=Run.Kind.TRAJECTORY,
        dataset=dataset,
        model_id=m[:255],
        created_by=user if user is not None and user.is_authenticated else None,
        parameters=params,
    )
    plan_run.delay_on_commit(run.pk)
    run.refresh_from_db()
    return run


# --- Generators, loaded once per worker process -------------------------------------------------


@functools.lru_cache(maxsize=4)
def get_generator(
    spec: str,
    vision: bool,
    timeout: float,
    max_retries: int,
    max_new_tokens: int,
    device: str,
    dtype: str,
) -> Generator:
    """One generator per configuration per process: a local model is loaded once."""
    if is_endpoint_spec(spec):
        return make_generator(
            spec,
            vision=vision,
            timeout=timeout,
            max_new_tokens=max_new_tokens,
            retry=RetryPolicy(max_retries=max_retries),
        )
    return make_generator(
        spec,
        vision=None if vision else False,  # a local model's own kind decides, unless told off
        device=device,
        dtype=DTYPES[dtype],
        max_new_tokens=max_new_tokens,
    )


def generators_for(params: dict) -> tuple[Generator, Generator]:
    common = (
        float(params["timeout"]),
        int(params["max_retries"]),
        int(params["max_new_tokens"]),
        params["device"],
        params["dtype"],
    )
    m = get_generator(params["m"], bool(params["m_vision"]), *common)
    rm = get_generator(params["rm"], bool(params["rm_vision"]), *common)
    return m, rm


# --- One batch --------------------------------------------------------------------------------


def process_trajectory_batch(*, batch_id: int, task_id: str = "") -> RunBatch | None:
    """Generate the trajectories of one batch of question items; None if nothing to do.

    Items this run already has a trajectory for (an earlier attempt of this batch) are done
    without a call. An item whose image cannot be read, whose seeded error cannot be
    injected, or whose loop failed (an endpoint's 500s or timeouts after retries, an empty
    answer) is a failed item with its reason; the batch goes on.
    """
    batch = claim_batch(batch_id=batch_id, task_id=task_id)
    if batch is None:
        return None
    started = time.monotonic()
    run = batch.run
    params = run.parameters
    m, rm = generators_for(params)
    questions = {
        q.pk: q for q in QuestionItem.objects.filter(pk__in=batch.ids).select_related("image")
    }
    written = existing_keys(run_id=run.pk, item_ids=list(questions))
    todo = [
        q
        for pk, q in sorted(questions.items())
        if source_key(run_id=run.pk, item_id=pk) not in written
    ]
    errors: list[dict] = []
    items = _items(run, todo, needs_image=m.vision or rm.vision, errors=errors)
    outcomes = run_batch(
        items, m=m, rm=rm, k=int(params["k"]), concurrency=int(params["concurrency"])
    )
    generated = []
    for outcome in outcomes:
        problem = outcome.error or _malformed(outcome)
        if problem:
            errors.append({"id": int(outcome.key), "error": problem})
            continue
        assert outcome.rectification is not None
        generated.append(
            Generated(questions[int(outcome.key)], outcome.rectification, outcome.injection)
        )

    def write() -> None:
        write_generated(run=run, generated=generated)
        _add_latency(run.pk, [g.rectification for g in generated])

    failed = len({e["id"] for e in errors})
    batch_outcome = BatchOutcome(
        done=len(batch.ids) - failed,
        failed=failed,
        errors=tuple(errors),
        prompt_tokens=sum(o.prompt_tokens for o in outcomes),
        completion_tokens=sum(o.completion_tokens for o in outcomes),
    )
    finish_batch(batch, batch_outcome, write=write, seconds=time.monotonic() - started)
    return batch


def _malformed(outcome: ItemOutcome) -> str | None:
    """A loop that "succeeded" with an empty answer: a local model that produced no text."""
    assert outcome.rectification is not None
    for step in outcome.rectification.steps:
        if not step.response.strip():
            return f"malformed output: {step.written_by} wrote an empty answer at step {step.k}"
    return None


def _items(
    run: Run, questions: list[QuestionItem], *, needs_image: bool, errors: list[dict]
) -> list[TrajectoryItem]:
    """The loop's inputs: evidence regions, phrases and image bytes, a few queries per batch."""
    params = run.parameters
    image_ids = sorted({q.image_id for q in questions})
    accepted: dict[int, list[dict]] = {i: [] for i in image_ids}
    phrases: dict[int, set[str]] = {i: set() for i in image_ids}
    regions = Region.objects.filter(image_id__in=image_ids).order_by("image_id", "pk")
    for r in regions.values("image_id", "status", "phrase", "caption", "x0", "y0", "x1", "y1"):
        if r["phrase"]:
            phrases[r["image_id"]].add(r["phrase"])
        if r["status"] == Region.Status.ACCEPTED:
            accepted[r["image_id"]].append(
                {
                    "phrase": r["phrase"],
                    "caption": r["caption"],
                    "box": [r["x0"], r["y0"], r["x1"], r["y1"]],
                }
            )
    seeded = tuple(params.get("seeded_errors") or ())
    vocabulary = tuple(object_vocabulary(run)) if "object" in seeded else ()
    pixels: dict[int, bytes | str] = {}
    items = []
    for question in questions:
        image_bytes: bytes | None = None
        if needs_image:
            found = _image_bytes(question.image, pixels)
            if isinstance(found, str):
                errors.append({"id": question.pk, "error": found})
                continue
            image_bytes = found
        items.append(
            TrajectoryItem(
                key=str(question.pk),
                question=question.question,
                image=image_bytes,
                regions=tuple(accepted[question.image_id]),
                reference=question.reference,
                seeded_types=seeded,
                image_phrases=frozenset(phrases[question.image_id]),
                vocabulary=vocabulary,
                seed=int(params.get("seed", 0)),
            )
        )
    return items


def _image_bytes(image: Image, cache: dict[int, bytes | str]) -> bytes | str:
    """The image's stored bytes, read once per batch, or the reason they cannot be read."""
    if image.pk not in cache:
        try:
            cache[image.pk] = read_stored_bytes(image)
        except NoStoredBytes as exc:
            cache[image.pk] = str(exc)
    return cache[image.pk]


def object_vocabulary(run: Run) -> list[str]:
    """The phrases the object injection draws from: given at start, or the dataset's
    ``VOCABULARY_SIZE`` most frequent non-rejected region phrases, counted once per run (by the
    first batch that needs them) and kept in the run's parameters."""
    if "object_vocabulary" in run.parameters:
        return list(run.parameters["object_vocabulary"])
    with transaction.atomic():
        locked = Run.objects.select_for_update().only("parameters").get(pk=run.pk)
        if "object_vocabulary" not in locked.parameters:
            counted = (
                Region.objects.filter(image__dataset_id=run.dataset_id)
                .exclude(status=Region.Status.REJECTED)
                .exclude(phrase="")
                .values("phrase")
                .annotate(n=Count("pk"))
                .order_by("-n", "phrase")[:VOCABULARY_SIZE]
            )
            vocabulary = sorted(row["phrase"] for row in counted)
            locked.parameters = {**locked.parameters, "object_vocabulary": vocabulary}
            Run.objects.filter(pk=run.pk).update(parameters=locked.parameters)
        run.parameters = locked.parameters
    return list(run.parameters["object_vocabulary"])


def _add_latency(run_id: int, rectifications: list) -> None:
    """Add this batch's latencies to the run's summary (inside the batch's transaction; the
    row lock makes concurrent batches add up instead of overwriting each other)."""
    if not rectifications:
        return
    locked = Run.objects.select_for_update().only("summary").get(pk=run_id)
    summary = dict(locked.summary or {})
    totals = add_totals(summary.get("latency_totals") or {}, latency_totals(rectifications))
    summary["latency_totals"] = totals
    summary["latency"] = latency_means(totals)
    outcomes = summary.get("outcomes") or {}
    for r in rectifications:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    summary["outcomes"] = outcomes
    Run.objects.filter(pk=run_id).update(summary=summary)
