"""Seeded errors: a correct reference answer with ONE controlled error of a chosen type.

The preprint's data needs all four error types (FORMATS.md: ``object``, ``attribute``,
``spatial``, ``reasoning``), and real models do not make every kind often enough, so a
trajectory run (``workers.trajectories``) can start from a reference answer corrupted here as
A_0. Every injection is deterministic under its seed and returns what it changed, so the change
can be checked and recorded; when an answer offers nothing to corrupt, ``InjectionImpossible``
says why (we never fake one).

No Django here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.formats import ERROR_TYPES
from training.geometry import INVERSE, Box, spatial_relation

SEEDED_ERROR_TYPES = ERROR_TYPES  # every FORMATS.md error type can be seeded


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


class InjectionImpossible(ValueError):
    """The answer (or the image) offers nothing to corrupt for this error type; says why."""


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
