"""Correction trajectories: the answer-critique-revise loop over many items, and its latency.

``generate_batch(items, m=, rm=, k=, concurrency=)`` runs ``training.stage2.loop.rectify``
(the one loop; inference and evaluation use it too) for each (image, question) item, with at
most ``concurrency`` items in flight at once. Each item ends in an ``ItemOutcome``: the
rectification, or the reason it failed (a ``GenerationError`` after the endpoint's retries, a
malformed answer, a seeded error that cannot be injected). One failure never stops the others.
An item may ask for a seeded error as A_0 (``seed_item``; the injections are
``workers.seeded_errors``). ``latency_totals`` and friends sum the finished trajectories' call
times into the run's latency summary.

Free of Django, so it can be tested and benchmarked alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.llm import run_sync
from training.stage2.generation import Generation, GenerationError, Generator
from training.stage2.generators import EndpointGenerator
from training.stage2.loop import Rectification, rectify
from training.stage2.prompts import evidence_text
from workers.seeded_errors import Injection, InjectionImpossible, inject_error

# --- Items and outcomes -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrajectoryItem:
    """One (image, question) to run the loop on, with what the RM and the injections need.

    ``regions`` are the image's accepted regions sorted by id, each a mapping with ``phrase``,
    ``box`` (pixel ``[x0, y0, x1, y1]``) and ``caption``: the RM's evidence and the spatial
    injection's ground truth. ``seeded_types`` asks for a seeded error (one of these types,
    chosen by ``seed``) in ``reference``; empty means M writes A_0 itself.
    """

    key: str
    question: str
    image: bytes | None = None
    regions: tuple[Mapping[str, Any], ...] = ()
    reference: str | None = None
    seeded_types: tuple[str, ...] = ()
    image_phrases: frozenset[str] = frozenset()  # every phrase on the image, any status
    vocabulary: tuple[str, ...] = ()  # the dataset's phrases, for the object injection
    seed: int = 0


@dataclass
class ItemOutcome:
    key: str
    rectification: Rectification | None = None
    injection: Injection | None = None
    error: str | None = None
    seconds: float = 0.0
    # Tokens of every answered call of the item, a failed item's too (an endpoint bills them).
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.rectification is not None


LOCAL_MODEL_ERRORS = (RuntimeError, ValueError, TypeError, OSError, KeyError, IndexError)


# --- Running the loop over a batch ------------------------------------------------------------


async def generate_batch(
    items: Sequence[TrajectoryItem],
    *,
    m: Generator,
    rm: Generator,
    k: int,
    concurrency: int = 16,
) -> list[ItemOutcome]:
    """Run the rectification loop for every item, ``concurrency`` at a time; outcomes in order.

    The loop of one item is sequential (each call needs the previous answer), so the
    throughput of a batch against an endpoint comes from running many items at once. Calls
    to an endpoint are retried by ``training.llm`` inside ``EndpointGenerator``; what still
    fails is recorded on the item's outcome.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be 1 or more")
    semaphore = asyncio.Semaphore(concurrency)

    async def one(item: TrajectoryItem) -> ItemOutcome:
        async with semaphore:
            return await generate_one(item, m=m, rm=rm, k=k)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def generate_one(item: TrajectoryItem, *, m: Generator, rm: Generator, k: int) -> ItemOutcome:
    """One item: seed an error if asked, then the loop; failures become the outcome's error."""
    started = time.perf_counter()
    outcome = ItemOutcome(key=item.key)
    start = None
    if item.seeded_types:
        try:
            outcome.injection = seed_item(item)
        except InjectionImpossible as exc:
            outcome.error = f"seeded error: {exc}"
            return outcome
        start = outcome.injection.corrupted
    metered_m, metered_rm = Metered(m), Metered(rm) if rm is not m else None
    try:
        outcome.rectification = await rectify(
            question=item.question,
            m=metered_m,
            rm=metered_rm or metered_m,
            k=k,
            image=item.image,
            evidence=evidence_text(item.regions),
            start=start,
            start_written_by=outcome.injection.written_by if outcome.injection else "reference",
        )
    except GenerationError as exc:
        outcome.error = str(exc)
    except LOCAL_MODEL_ERRORS as exc:
        # A local model's error on one input (a CUDA out-of-memory on a long answer, an image
        # the processor cannot read) fails that item only. Not ``Exception``: a Celery time
        # limit must still stop the whole batch.
        outcome.error = f"{type(exc).__name__}: {exc}"
    for metered in (metered_m, metered_rm):
        if metered is not None:
            outcome.prompt_tokens += metered.prompt_tokens
            outcome.completion_tokens += metered.completion_tokens
    outcome.seconds = time.perf_counter() - started
    return outcome


class Metered:
    """A generator that adds up the tokens of the calls made through it (one per item, so
    concurrent items never share a counter); everything else is the wrapped generator's."""

    def __init__(self, inner: Generator) -> None:
        self.inner, self.name, self.vision = inner, inner.name, inner.vision
        self.prompt_tokens = self.completion_tokens = 0

    async def generate(
        self, prompt: str, *, image: bytes | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        generation = await self.inner.generate(prompt, image=image, max_new_tokens=max_new_tokens)
        self.prompt_tokens += generation.prompt_tokens
        self.completion_tokens += generation.completion_tokens
        return generation

    async def aclose(self) -> None:
        """The wrapped generator outlives the item; ``run_batch`` closes it."""


def run_batch(
    items: Sequence[TrajectoryItem],
    *,
    m: Generator,
    rm: Generator,
    k: int,
    concurrency: int = 16,
) -> list[ItemOutcome]:
    """``generate_batch`` from synchronous code (a Celery task), on a loop of its own.

    Endpoint clients belong to the loop that made them, so they are closed before the loop
    ends; the generators themselves (and a local model's weights) stay loaded for the next
    batch of this process.
    """

    async def go() -> list[ItemOutcome]:
        try:
            return await generate_batch(items, m=m, rm=rm, k=k, concurrency=concurrency)
        finally:
            await asyncio.gather(
                *(g.aclose() for g in {id(m): m, id(rm): rm}.values() if _is_endpoint(g))
            )

    return run_sync(go())


def _is_endpoint(generator: Generator) -> bool:
    return isinstance(generator, EndpointGenerator)


# --- Seeded errors as A_0 -----------------------------------------------------------------------


def seed_item(item: TrajectoryItem) -> Injection:
    """The seeded error for an item: one of its types, picked by the item's seed.

    The types are tried in an order shuffled by ``seed`` (so a run asking for several types
    spreads them over its items, reproducibly); the first one the answer allows is used.
    ``InjectionImpossible`` lists why each type was impossible.
    """
    if not (item.reference or "").strip():
        raise InjectionImpossible("the item has no reference answer to seed an error into")
    rng = random.Random(f"{item.seed}:{item.key}")
    order = list(item.seeded_types)
    rng.shuffle(order)
    reasons = []
    for error_type in order:
        try:
            return inject_error(
                item.reference or "",
                error_type,
                regions=item.regions,
                image_phrases=item.image_phrases,
                vocabulary=item.vocabulary,
                rng=rng,
            )
        except InjectionImpossible as exc:
            reasons.append(f"{error_type}: {exc}")
    raise InjectionImpossible("; ".join(reasons))


# --- The run's latency summary (the preprint's Table 4) ------------------------------------


def latency_totals(rectifications: Sequence[Rectification]) -> dict[str, Any]:
    """Sums over finished trajectories, JSON-ready, to be added up batch by batch.

    ``by_revisions`` maps the number of revisions M made to [trajectories, summed ms of all
    M and RM calls], which is Table 4's "latency per query with n rectification steps".
    """
    totals = empty_totals()
    for rectification in rectifications:
        totals["trajectories"] += 1
        totals["steps"] += len(rectification.steps)
        query_ms = 0.0
        for step in rectification.steps:
            if step.m_latency_s is not None:
                totals["m_calls"] += 1
                totals["m_ms"] += step.m_latency_s * 1000
                query_ms += step.m_latency_s * 1000
            if step.rm_latency_s is not None:
                totals["rm_calls"] += 1
                totals["rm_ms"] += step.rm_latency_s * 1000
                query_ms += step.rm_latency_s * 1000
        bucket = totals["by_revisions"].setdefault(str(rectification.revisions), [0, 0.0])
        bucket[0] += 1
        bucket[1] += query_ms
    return totals


def empty_totals() -> dict[str, Any]:
    return {
        "trajectories": 0, "steps": 0, "m_calls": 0, "m_ms": 0.0, "rm_calls": 0, "rm_ms": 0.0,
        "by_revisions": {},
    }  # fmt: skip


def add_totals(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The sum of two ``latency_totals``.

    >>> add_totals({"steps": 2, "by_revisions": {"1": [1, 5.0]}},
    ...            {"steps": 3, "by_revisions": {"1": [2, 7.0], "0": [1, 1.0]}})["by_revisions"]
    {'1': [3, 12.0], '0': [1, 1.0]}
    """
    out = empty_totals()
    for totals in (a, b):
        for key, value in totals.items():
            if key == "by_revisions":
                for n, (count, ms) in value.items():
                    bucket = out["by_revisions"].setdefault(n, [0, 0.0])
                    bucket[0] += count
                    bucket[1] += ms
            else:
                out[key] = out.get(key, 0) + value
    return out


def latency_means(totals: Mapping[str, Any]) -> dict[str, Any]:
    """Means for people: M ms and RM ms per call, steps per trajectory, ms per query by the
    number of revisions (the rows of Table 4).

    >>> latency_means({"trajectories": 2, "steps": 3, "m_calls": 3, "m_ms": 450.0,
    ...                "rm_calls": 3, "rm_ms": 240.0, "by_revisions": {"0": [1, 230.0]}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'trajectories': 2, 'mean_m_ms': 150.0, 'mean_rm_ms': 80.0, 'mean_steps': 1.5,
     'query_ms_by_revisions': {'0': {'trajectories': 1, 'mean_ms': 230.0}}}
    """

    def mean(total: float, count: int) -> float | None:
        return round(total / count, 3) if count else None

    return {
        "trajectories": totals.get("trajectories", 0),
        "mean_m_ms": mean(totals.get("m_ms", 0.0), totals.get("m_calls", 0)),
        "mean_rm_ms": mean(totals.get("rm_ms", 0.0), totals.get("rm_calls", 0)),
        "mean_steps": mean(totals.get("steps", 0), totals.get("trajectories", 0)),
        "query_ms_by_revisions": {
            n: {"trajectories": count, "mean_ms": mean(ms, count)}
            for n, (count, ms) in sorted(
                totals.get("by_revisions", {}).items(), key=lambda kv: int(kv[0])
            )
        },
    }
