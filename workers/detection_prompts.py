"""Grounding DINO's text side: the caller's phrases as prompts the text encoder takes.

A vocabulary is normalised (``normalise_vocabulary``) or read off a global caption
(``phrases_from_caption``); each phrase becomes WordPiece ids (``phrase_token_ids``), and the
phrases of one image are cut into chunks whose ``[CLS] p1 . p2 . ... [SEP]`` prompt fits the
encoder (``chunk_by_length``, ``build_prompt``), each with the token span of every phrase so
that detections map back to the caller's phrases. The detector run is ``workers.detection``.

No Django here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# BERT ids Grounding DINO uses to split the prompt into phrases: transformers' phrase splitting
# looks for exactly these ids, whatever the tokenizer.
CLS_ID, SEP_ID, DOT_ID, QUESTION_ID = 101, 102, 1012, 1029


def normalise_vocabulary(labels: Iterable[str]) -> list[str]:
    """Lowercase, collapse spaces, strip, drop empties and duplicates; keep the first order.

    >>> normalise_vocabulary(["Dog", " dog ", "Red  Car", "", "cat", "DOG"])
    ['dog', 'red car', 'cat']
    """
    seen: dict[str, None] = {}
    for label in labels:
        clean = " ".join(label.lower().split())
        if clean:
            seen.setdefault(clean, None)
    return list(seen)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that end a noun phrase or never belong to one. A small closed list on purpose: the
# chunker is a dependency-free heuristic, not a parser.
_DETERMINERS = _words(
    "a an the this that these those his her its their our my your some any each every "
    "another other several many few both"
)
_STOP = _words(
    "is are was were be been being am has have had do does did will would can could should "
    "may might must shall and or but nor so yet if then than as of in on at by for with "
    "from to into onto over under above below behind between near beside next up down off "
    "out through across along around against during while where when which who whom whose "
    "what why how there here it he she they we you i me him them us not no very too also just only"
)
_NUMBERS = _words("one two three four five six seven eight nine ten eleven twelve dozen")
# Endings that mark a word as a verb or adverb rather than part of a noun phrase.
_NON_NOUN_SUFFIXES = ("ly", "ing", "ed")
_KEEP_ING = _words("building clothing ceiling painting railing awning ring king thing")
_WORD = re.compile(r"[a-z][a-z'-]*|[0-9]+")


def _is_nounish(word: str) -> bool:
    if word in _STOP or word in _DETERMINERS:
        return False
    if word in _KEEP_ING:
        return True
    return not (len(word) > 4 and word.endswith(_NON_NOUN_SUFFIXES))


def phrases_from_caption(caption: str) -> list[str]:
    """Noun phrases from a global caption, for the "caption" prompt mode.

    A simple chunker: the caption is cut at punctuation, function words (articles,
    prepositions, conjunctions, auxiliaries, pronouns) and words that look like verbs or
    adverbs (``-ing``, ``-ed``, ``-ly``); the runs of words left are the phrases. Numbers are
    dropped from a phrase's start. Phrases come out lowercase, deduplicated, in caption order.

    >>> phrases_from_caption("A brown dog is sitting on a red sofa next to the window.")
    ['brown dog', 'red sofa', 'window']
    >>> phrases_from_caption("Two men riding horses along the beach at sunset")
    ['men', 'horses', 'beach', 'sunset']
    >>> phrases_from_caption("A man, a woman and a child in front of an old building")
    ['man', 'woman', 'child', 'front', 'old building']
    >>> phrases_from_caption("")
    []
    """
    phrases: list[str] = []
    current: list[str] = []

    def close() -> None:
        while current and (current[0] in _NUMBERS or current[0].isdigit()):
            current.pop(0)
        if current:
            phrases.append(" ".join(current))
        current.clear()

    for piece in re.split(r"[.,;:!?()\[\]\"/]+", caption.lower()):
        for word in _WORD.findall(piece):
            if _is_nounish(word):
                current.append(word)
            else:
                close()
        close()
    return normalise_vocabulary(phrases)


def chunk_by_length(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Split items with the given token ``lengths`` into runs whose prompt fits ``limit``.

    A prompt costs 2 tokens (``[CLS]``, ``[SEP]``) plus each phrase's tokens and its ``.``.
    Order is kept and each chunk is filled greedily. Returns lists of indices.

    >>> chunk_by_length([3, 3, 3, 3], limit=10)
    [[0, 1], [2, 3]]
    >>> chunk_by_length([1, 1, 1], limit=256)
    [[0, 1, 2]]
    >>> chunk_by_length([], limit=10)
    []
    """
    if limit < 4:
        raise ValueError(f"a prompt limit of {limit} tokens leaves no room for a phrase")
    chunks: list[list[int]] = []
    used = 2
    for i, length in enumerate(lengths):
        cost = length + 1
        if not chunks or used + cost > limit:
            chunks.append([])
            used = 2
        chunks[-1].append(i)
        used += cost
    return chunks


@dataclass(frozen=True)
class PromptChunk:
    """One prompt: its phrases, its token ids and each phrase's token span ``[start, end)``."""

    phrases: tuple[str, ...]
    input_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]


def build_prompt(phrases: Sequence[str], token_ids: Sequence[Sequence[int]]) -> PromptChunk:
    """``[CLS] p1 . p2 . ... [SEP]`` from each phrase's WordPiece ids, with the phrase spans.

    This is what ``GroundingDinoProcessor`` makes of ``["a cat", "a dog"]`` ("a cat. a dog."),
    since BERT's tokenizer splits on "." and spaces; the tests check they agree.

    >>> build_prompt(["cat", "red car"], [[7], [8, 9]])
    PromptChunk(phrases=('cat', 'red car'), input_ids=(101, 7, 1012, 8, 9, 1012, 102), spans=((1, 2), (3, 5)))
    """  # noqa: E501
    ids = [CLS_ID]
    spans = []
    for ids_of_phrase in token_ids:
        start = len(ids)
        ids.extend(ids_of_phrase)
        spans.append((start, len(ids)))
        ids.append(DOT_ID)
    ids.append(SEP_ID)
    return PromptChunk(tuple(phrases), tuple(ids), tuple(spans))


def sanitise_phrase(phrase: str) -> str:
    """A phrase's own "." or "?" would split it in two for the model: make them spaces."""
    return " ".join(re.sub(r"[.?]", " ", phrase.lower()).split())


def phrase_token_ids(tokenizer: Any, phrase: str) -> tuple[int, ...]:
    """A phrase's WordPiece ids from the model's BERT tokenizer, without special tokens and
    without the separator ids that would split it."""
    ids = tokenizer(sanitise_phrase(phrase), add_special_tokens=False)["input_ids"]
    return tuple(i for i in ids if i not in (DOT_ID, QUESTION_ID))
