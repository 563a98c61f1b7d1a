"""Correction trajectories: the answer-critique-revise loop over many items, and seeded errors.

Two things live here, both free of Django so they can be tested and benchmarked alone:

- ``generate_batch(items, m=, rm=, k=, concurrency=)`` runs ``training.stage2.loop.rectify``
  (the one loop; inference and evaluation use it too) for each (image, question) item, with
  at most ``concurrency`` items in flight at once. Each item ends in an ``ItemOutcome``: the
  rectification, or the reason it failed (a ``GenerationError`` after the endpoint's retries,
  a malformed answer, a seeded error that cannot be injected). One failure never stops the
  others.
- ``inject_error(answer, error_type, ...)``: the preprint's data needs all four error types
  (FORMATS.md: ``object``, ``attribute``, ``spatial``, ``reasoning``), and real models do not
  make every kind often enough, so a run can start from a correct reference answer with ONE
  controlled error of a chosen type as A_0. Every injection is deterministic under its seed
  and returns what it changed, so the change can be checked and recorded; when an answer
  offers nothing to corrupt, ``InjectionImpossible`` says why (we never fake one).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.formats import ERROR_TYPES
from training.geometry import INVERSE, Box, spatial_relation
from training.stage2.generators import EndpointGenerator, Generation, GenerationError, Generator
from training.stage2.loop import Rectification, rectify
from training.stage2.prompts import evidence_text
from workers.llm import run_sync

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


@dataclass(frozen=True)
class Injection:
    """A seeded error: the type, the corrupted answer, and exactly what was changed."""

    error_type: str
    original: str
    corrupted: str
    detail: dict[str, Any]

    @property
    def written_by(self) -> str:
        return f"seeded:{self.error_type}"


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


SEEDED_ERROR_TYPES = ERROR_TYPES  # every FORMATS.md error type can be seeded
LOCAL_MODEL_ERRORS = (RuntimeError, ValueError, TypeError, OSError, KeyError, IndexError)


class InjectionImpossible(ValueError):
    """The answer (or the image) offers nothing to corrupt for this error type; says why."""


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
    to an endpoint are retried by ``workers.llm`` inside ``EndpointGenerator``; what still
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


# --- Seeded errors ----------------------------------------------------------------------------


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


def inject_error(
    answer: str,
    error_type: str,
    *,
    regions: Sequence[Mapping[str, Any]] = (),
    image_phrases: frozenset[str] | set[str] = frozenset(),
    vocabulary: Sequence[str] = (),
    rng: random.Random | None = None,
) -> Injection:
    """``answer`` with one error of ``error_type`` in it (see the module docstring).

    >>> inject_error("A red cup stands on the table.", "attribute", rng=random.Random(1)).detail
    ... # doctest: +ELLIPSIS
    {'kind': 'colour', 'from': 'red', 'to': '...', 'start': 2}
    """
    rng = rng or random.Random(0)
    if error_type == "attribute":
        return inject_attribute(answer, rng)
    if error_type == "spatial":
        return inject_spatial(answer, regions, rng)
    if error_type == "object":
        return inject_object(answer, image_phrases, vocabulary, rng)
    if error_type == "reasoning":
        return inject_reasoning(answer, rng)
    raise ValueError(f"error type {error_type!r} is not one of {', '.join(ERROR_TYPES)}")


def _injection(error_type: str, original: str, corrupted: str, **detail: Any) -> Injection:
    return Injection(error_type, original, corrupted, detail)


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + _match_case(new, text[start:end]) + text[end:]


# Attribute words by kind. Colours are swapped for another colour; sizes for one of the
# opposite size (a "small" dog called "tiny" is not wrong); materials for another material.
# Spelling variants share a canonical name so "grey" never becomes "gray".
COLOURS = {
    "red": "red", "blue": "blue", "green": "green", "yellow": "yellow", "black": "black",
    "white": "white", "brown": "brown", "orange": "orange", "purple": "purple",
    "pink": "pink", "grey": "grey", "gray": "grey", "silver": "silver", "golden": "golden",
}  # fmt: skip
SMALL_WORDS = ("small", "tiny", "little", "short")
LARGE_WORDS = ("large", "big", "huge", "tall", "giant")
MATERIALS = (
    "wooden", "metal", "metallic", "plastic", "leather", "stone", "brick", "ceramic",
    "glass", "steel", "concrete", "wicker", "marble",
)  # fmt: skip
_ATTRIBUTE_WORD = re.compile(
    r"\b(" + "|".join(sorted({*COLOURS, *SMALL_WORDS, *LARGE_WORDS, *MATERIALS}, key=len,
                                reverse=True)) + r")\b",
    re.IGNORECASE,
)  # fmt: skip


def _attribute_kind(word: str) -> str:
    if word in COLOURS:
        return "colour"
    if word in SMALL_WORDS or word in LARGE_WORDS:
        return "size"
    return "material"


def _wrong_attribute(word: str, rng: random.Random) -> str:
    if word in COLOURS:
        choices = sorted({c for c in COLOURS.values() if c != COLOURS[word]})
    elif word in SMALL_WORDS:
        choices = list(LARGE_WORDS)
    elif word in LARGE_WORDS:
        choices = list(SMALL_WORDS)
    else:
        same = {"metal", "metallic", "steel"} if word in ("metal", "metallic", "steel") else {word}
        choices = [m for m in MATERIALS if m not in same]
    return rng.choice(choices)


def inject_attribute(answer: str, rng: random.Random) -> Injection:
    """Swap one colour, size or material word for a wrong one of the same kind.

    >>> inject_attribute("The dog is small.", random.Random(0)).detail["kind"]
    'size'
    """
    found = list(_ATTRIBUTE_WORD.finditer(answer))
    if not found:
        raise InjectionImpossible("the answer names no colour, size or material to change")
    match = rng.choice(found)
    word = match.group(1).lower()
    new = _wrong_attribute(word, rng)
    corrupted = _replace(answer, match.start(1), match.end(1), new)
    return _injection(
        "attribute", answer, corrupted, kind=_attribute_kind(word), **{"from": word, "to": new},
        start=match.start(1),
    )  # fmt: skip


# Spatial expressions in text and the FORMATS.md relation each one claims. Only
# prepositional ones, so any replacement reads as a sentence.
SPATIAL_EXPRESSIONS = {
    "to the left of": "left of",
    "left of": "left of",
    "to the right of": "right of",
    "right of": "right of",
    "on top of": "above",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "underneath": "below",
    "beneath": "below",
    "inside": "inside",
}
# What a false relation is written as: the inverse of the true one where there is one.
RELATION_TEXT = {"left of": "to the left of", "right of": "to the right of", "above": "above",
                 "below": "below", "inside": "inside"}  # fmt: skip
_SPATIAL = re.compile(
    r"\b(" + "|".join(sorted(SPATIAL_EXPRESSIONS, key=len, reverse=True)) + r")\b", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def _named_regions(regions: Sequence[Mapping[str, Any]]) -> dict[str, Box]:
    """Phrase -> box for phrases that name exactly one region (an ambiguous phrase cannot be
    checked against one box)."""
    boxes: dict[str, list[Box]] = {}
    for region in regions:
        phrase = (region.get("phrase") or "").strip().lower()
        if phrase:
            x0, y0, x1, y1 = (float(v) for v in region["box"])
            boxes.setdefault(phrase, []).append((x0, y0, x1, y1))
    return {phrase: found[0] for phrase, found in boxes.items() if len(found) == 1}


def _mentions(text: str, phrases: Sequence[str]) -> list[tuple[int, int, str]]:
    spans = []
    for phrase in phrases:
        for match in re.finditer(r"\b" + re.escape(phrase) + r"s?\b", text, re.IGNORECASE):
            spans.append((match.start(), match.end(), phrase))
    return sorted(spans)


def inject_spatial(
    answer: str, regions: Sequence[Mapping[str, Any]], rng: random.Random
) -> Injection:
    """Flip a spatial relation the answer states between two of the image's named regions.

    Finds "<region A> ... <spatial expression> ... <region B>" within one sentence and writes
    a relation that is false for A and B per ``training.geometry.spatial_relation`` (the
    inverse of the true one when that differs, e.g. "left of" for a dog right of the car).
    """
    named = _named_regions(regions)
    if len(named) < 2:
        raise InjectionImpossible(
            "the image has fewer than two regions with distinct phrases to relate"
        )
    phrases = sorted(named, key=len, reverse=True)
    candidates = []
    for expression in _SPATIAL.finditer(answer):
        sentence_start = max(
            (m.end() for m in _SENTENCE_END.finditer(answer, 0, expression.start())), default=0
        )
        end = _SENTENCE_END.search(answer, expression.end())
        sentence_end = end.start() if end else len(answer)
        before = [
            s
            for s in _mentions(answer, phrases)
            if sentence_start <= s[0] and s[1] <= expression.start()
        ]
        after = [
            s
            for s in _mentions(answer, phrases)
            if expression.end() <= s[0] and s[1] <= sentence_end
        ]
        if not before or not after:
            continue
        subject, obj = before[-1][2], after[0][2]
        if subject != obj:
            candidates.append((expression, subject, obj))
    if not candidates:
        raise InjectionImpossible(
            "the answer states no spatial relation between two of the image's named regions"
        )
    expression, subject, obj = rng.choice(candidates)
    true = spatial_relation(named[subject], named[obj])
    new = INVERSE[true] if INVERSE[true] in RELATION_TEXT and INVERSE[true] != true else None
    if new is None:
        new = rng.choice(sorted(r for r in RELATION_TEXT if r != true))
    corrupted = _replace(answer, expression.start(1), expression.end(1), RELATION_TEXT[new])
    return _injection(
        "spatial", answer, corrupted, subject=subject, object=obj,
        stated=SPATIAL_EXPRESSIONS[expression.group(1).lower()], true=true, to=new,
    )  # fmt: skip


def inject_object(
    answer: str,
    image_phrases: frozenset[str] | set[str],
    vocabulary: Sequence[str],
    rng: random.Random,
) -> Injection:
    """Add an object the image does not contain, drawn from the dataset's vocabulary.

    The object is a phrase of the dataset that no region of this image carries and that the
    answer does not mention; it is added as one sentence after a random sentence.
    """
    on_image = {p.strip().lower() for p in image_phrases}
    lowered = answer.lower()
    absent = sorted(
        {
            p.strip().lower()
            for p in vocabulary
            if p.strip() and p.strip().lower() not in on_image
            and not re.search(r"\b" + re.escape(p.strip().lower()) + r"s?\b", lowered)
        }
    )  # fmt: skip
    if not absent:
        raise InjectionImpossible(
            "the dataset's vocabulary has no object that is absent from this image"
        )
    added = rng.choice(absent)
    article = "an" if added[:1] in "aeiou" else "a"
    sentence = f"There is also {article} {added} in the image."
    ends = [m.end() for m in _SENTENCE_END.finditer(answer)]
    at = rng.choice(ends) if ends else len(answer)
    head, tail = answer[:at].rstrip(), answer[at:].lstrip()
    if head and head[-1] not in ".!?":
        head += "."
    corrupted = " ".join(part for part in (head, sentence, tail) if part)
    return _injection("object", answer, corrupted, object=added, sentence=sentence)


# Edits that break one step of an explanation: negate a claim, or swap a connective so the
# conclusion no longer follows. Tried on one sentence; the first that applies is used.
_REASONING_EDITS: tuple[tuple[str, re.Pattern[str], str | None], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE), replacement)
    for name, pattern, replacement in (
        ("connective", r"\b(therefore|thus|hence|so)\b", "however"),
        ("connective", r"\bbecause\b", "even though"),
        ("connective", r"\bwhich means\b", "which does not mean"),
        ("negation", r"\b(is|are|was|were) not\b", r"\1"),
        ("negation", r"\b(isn't|aren't)\b", None),
        ("negation", r"\bcannot\b", "can"),
        ("negation", r"\bcan\b", "cannot"),
        ("negation", r"\b(is|are|was|were)\b", r"\1 not"),
        ("negation", r"\bhas\b", "does not have"),
        ("negation", r"\bhave\b", "do not have"),
    )
)
_CONTRACTIONS = {"isn't": "is", "aren't": "are"}


def _split_sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if text[start : match.end()].strip():
            spans.append((start, match.end()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def inject_reasoning(answer: str, rng: random.Random) -> Injection:
    """Break one step of a multi-sentence explanation: negate it or swap its connective.

    A later sentence is preferred (the first usually just describes; later ones conclude), so
    the chain of reasoning no longer holds while every other sentence stays as it was.
    """
    sentences = _split_sentences(answer)
    if len(sentences) < 2:
        raise InjectionImpossible(
            "the answer is one sentence; there is no multi-step explanation to break"
        )
    order = list(range(1, len(sentences)))
    rng.shuffle(order)
    for index in [*order, 0]:
        start, end = sentences[index]
        text = answer[start:end]
        for name, pattern, replacement in _REASONING_EDITS:
            match = pattern.search(text)
            if match is None:
                continue
            if replacement is None:
                new_text = _CONTRACTIONS[match.group(1).lower()] + " not"
            else:
                new_text = match.expand(replacement)
            edited = (
                text[: match.start()] + _match_case(new_text, match.group(0)) + text[match.end() :]
            )
            corrupted = answer[:start] + edited + answer[end:]
            return _injection(
                "reasoning", answer, corrupted, sentence=index, edit=name,
                before=text.strip(), after=edited.strip(),
            )  # fmt: skip
    raise InjectionImpossible(
        "no sentence has a connective or a claim (is/are/can/has) whose negation breaks it"
    )


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
