"""Region captioners: from a detected region (box, phrase, image) to a region caption t_r.

Three strategies, chosen per run (``make_captioner``):

- ``template`` (here): no model. The phrase with size and position words from the box,
  "a small dog in the lower left". Deterministic.
- ``local`` (``workers.captioning_local``): the preprint's strategy (a). A ``transformers``
  image-to-text checkpoint (anything ``AutoModelForImageTextToText`` loads: BLIP, GIT, LLaVA,
  Qwen-VL...) captions the region crop with some context around it, in batches, loaded once
  per process.
- ``llm`` (``workers.captioning_llm``): the preprint's strategy (b). An OpenAI-compatible
  endpoint through the official ``openai`` client gets the global caption T, the phrase, the
  box and the region crop, and answers ``{"caption": "..."}``; see ``training/llm.py`` for
  retries.

Every captioner takes ``RegionToCaption`` and returns one ``CaptionOutcome`` per region
(``workers.region_captions``), in input order, and never raises for one bad region: a
permanent failure is recorded on its outcome and the others go on. The strategies are sibling
modules rather than a package so that each name has one importable home.

Size and position words come from ``training.formats`` (``position_words``), the one
geometry-to-words rule that the review UI's spatial lint checks captions against.

No Django here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from training.formats import POSITION_WORDS, grid_cell, size_word
from training.geometry import Box
from training.llm import RetryPolicy
from workers.captioning_llm import LlmCaptioner
from workers.captioning_local import LocalCaptioner
from workers.region_captions import CaptionOutcome, RegionToCaption

STRATEGIES = ("template", "local", "llm")


class Captioner(Protocol):
    strategy: str  # "template" | "local" | "llm"
    model_id: str  # "" for template
    prompt_version: str  # e.g. "llm-region-v1"; "template-v1"
    prompt_text: str  # the exact prompt template (stored on the run)

    def caption(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]: ...


# --------------------------------------------------------------------------- template

_ARTICLES = frozenset(
    ["a", "an", "the", "this", "that", "these", "those", "some", "two", "three", "four", "five"]
)
_PLURAL_ENDINGS = ("s", "men", "people", "children")
_SINGULAR_S = ("ss", "us", "is", "bus")


def _looks_plural(word: str) -> bool:
    return word.endswith(_PLURAL_ENDINGS) and not word.endswith(_SINGULAR_S)


def template_caption(phrase: str, box: Box, width: int, height: int) -> str:
    """The ``template`` strategy's caption: article, size word, phrase, position words.

    >>> template_caption("dog", (0, 80, 30, 100), 100, 100)
    'a small dog in the lower left'
    >>> template_caption("elephant", (20, 20, 70, 80), 100, 100)
    'an elephant in the centre'
    >>> template_caption("the red car", (40, 20, 100, 100), 100, 100)
    'the large red car on the right'
    >>> template_caption("horses", (0, 0, 10, 10), 100, 100)
    'tiny horses in the upper left'
    >>> template_caption("bus", (0, 0, 10, 10), 100, 100)
    'a tiny bus in the upper left'
    """
    words = phrase.strip().split()
    if not words:
        words = ["object"]
    size = size_word(box, width, height)
    row, column = grid_cell(box, width, height)
    if words[0].lower() in _ARTICLES:
        head, rest = [words[0]], words[1:]
    elif _looks_plural(words[-1].lower()):
        head, rest = [], words
    else:
        first = size or words[0]
        head, rest = ["an" if first[0].lower() in "aeiou" else "a"], words
    return " ".join([*head, *([size] if size else []), *rest, POSITION_WORDS[row, column]])


class TemplateCaptioner:
    strategy = "template"
    model_id = ""
    prompt_version = "template-v1"
    prompt_text = "{article} {size} {phrase} {position}  (workers.captioning.template_caption)"

    def caption(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]:
        return [
            CaptionOutcome(r.key, template_caption(r.phrase, r.box, r.image_width, r.image_height))
            for r in regions
        ]


# --------------------------------------------------------------------------- factory


def make_captioner(
    strategy: str,
    *,
    model: str = "",
    base_url: str = "",
    api_key: str = "",
    timeout: float = 60.0,
    concurrency: int = 16,
    max_retries: int = 5,
    device: str = "auto",
    dtype: str = "auto",
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    batch_size: int = 8,
    context_margin: float = 0.15,
    max_new_tokens: int = 40,
) -> Captioner:
    """The captioner for a run's strategy, configured from settings the caller passes in."""
    if strategy == "template":
        return TemplateCaptioner()
    if strategy == "local":
        return LocalCaptioner(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            context_margin=context_margin,
            max_new_tokens=max_new_tokens,
        )
    if strategy == "llm":
        return LlmCaptioner(
            model,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            concurrency=concurrency,
            retry=RetryPolicy(max_retries, backoff_base, backoff_max),
            context_margin=context_margin,
        )
    raise ValueError(f"unknown caption strategy {strategy!r}: use one of {STRATEGIES}")
