"""Region captioners: from a detected region (box, phrase, image) to a region caption t_r.

Three strategies, chosen per run (``make_captioner``):

- ``template``: no model. The phrase with size and position words from the box,
  "a small dog in the lower left". Deterministic.
- ``local``: the preprint's strategy (a). A ``transformers`` image-to-text checkpoint
  (anything ``AutoModelForImageTextToText`` loads: BLIP, GIT, LLaVA, Qwen-VL...) captions the
  region crop with some context around it, in batches, loaded once per process.
- ``llm``: the preprint's strategy (b). An OpenAI-compatible endpoint through the official
  ``openai`` client gets the global caption T, the phrase, the box and the region crop, and
  answers ``{"caption": "..."}``; see ``workers/llm.py`` for retries.

Every captioner returns one ``CaptionOutcome`` per region, in input order, and never raises for
one bad region: a permanent failure is recorded on its outcome and the others go on.

Size and position words come from ``training.formats`` (``position_words``), the one
geometry-to-words rule that the review UI's spatial lint checks captions against.

No Django here.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import logging
import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from training.formats import POSITION_WORDS, grid_cell, position_words, size_word
from training.geometry import Box
from workers.llm import (
    RetryPolicy,
    make_async_client,
    post_chat_completion,
    run_sync,
    with_retries,
)

if TYPE_CHECKING:
    import openai
    from PIL import Image

log = logging.getLogger(__name__)

STRATEGIES = ("template", "local", "llm")


@dataclass(frozen=True)
class RegionToCaption:
    key: str  # caller's id
    box: Box
    phrase: str
    image_width: int
    image_height: int
    global_caption: str = ""
    image: bytes | None = None  # whole image bytes; captioners that need pixels crop it


@dataclass(frozen=True)
class CaptionOutcome:
    key: str
    caption: str | None  # None when it failed permanently
    error: str | None = None  # the permanent reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Addition: the failure was transient (rate limits, timeouts) and retries ran out, so
    # retrying the item later may well succeed.
    retryable: bool = False


class Captioner(Protocol):
    strategy: str  # "template" | "local" | "llm"
    model_id: str  # "" for template
    prompt_version: str  # e.g. "llm-region-v1"; "template-v1"
    prompt_text: str  # the exact prompt template (stored on the run)

    def caption(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]: ...


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


def estimate_cost(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    prompt_price_per_1k: float | None,
    completion_price_per_1k: float | None,
) -> float | None:
    """Cost of a run's tokens, or None when a price is not configured.

    >>> estimate_cost(12_000, 3_000, prompt_price_per_1k=0.5, completion_price_per_1k=1.5)
    10.5
    >>> estimate_cost(12_000, 3_000, prompt_price_per_1k=0.5, completion_price_per_1k=None)
    """
    if prompt_price_per_1k is None or completion_price_per_1k is None:
        return None
    return round(
        prompt_tokens / 1000 * prompt_price_per_1k
        + completion_tokens / 1000 * completion_price_per_1k,
        6,
    )


def context_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Integer crop box around ``box``, grown by ``margin`` of its size on each side and kept
    inside the image (at least one pixel each way).

    >>> context_box((40, 40, 60, 60), 100, 100, 0.15)
    (37, 37, 63, 63)
    >>> context_box((0, 0, 100, 50), 100, 100, 0.15)
    (0, 0, 100, 58)
    """
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left = min(max(math.floor(x0 - dx), 0), width - 1)
    top = min(max(math.floor(y0 - dy), 0), height - 1)
    right = max(min(math.ceil(x1 + dx), width), left + 1)
    bottom = max(min(math.ceil(y1 + dy), height), top + 1)
    return left, top, right, bottom


class _Images:
    """Decodes each distinct image once per ``caption()`` call and cuts crops from it."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.decoded: dict[bytes, Image.Image] = {}

    def crop(self, region: RegionToCaption) -> Image.Image:
        from PIL import Image

        if region.image is None:
            raise ValueError("no image bytes given for this region")
        image = self.decoded.get(region.image)
        if image is None:
            with Image.open(io.BytesIO(region.image)) as opened:
                image = opened.convert("RGB")
            self.decoded[region.image] = image
        # Boxes are in the stored image's pixels; scale if the bytes are another size.
        sx, sy = image.width / region.image_width, image.height / region.image_height
        x0, y0, x1, y1 = region.box
        scaled = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        return image.crop(context_box(scaled, image.width, image.height, self.margin))


# --------------------------------------------------------------------------- template


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


# --------------------------------------------------------------------------- local model

LOCAL_CHAT_PROMPT = (
    "Describe the {phrase} in this picture in one short sentence: what it looks like and "
    "what it is doing."
)


@functools.cache
def _load_local(model: str, device: str, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    log.info("loading local captioner %s (%s, %s)", model, device, dtype)
    processor = AutoProcessor.from_pretrained(model)
    network: Any = AutoModelForImageTextToText.from_pretrained(model, dtype=getattr(torch, dtype))
    return processor, network.to(device).eval()


class LocalCaptioner:
    """Any ``AutoModelForImageTextToText`` checkpoint captioning region crops.

    Checkpoints with a chat template (LLaVA, Qwen-VL, ...) get ``LOCAL_CHAT_PROMPT`` as a user
    turn with the crop; plain captioners (BLIP, GIT) get the phrase as the start of the
    caption to continue. Crops are batched by prompt length, so no prompt is ever padded
    (padding side differs between model families); greedy decoding, so output is repeatable.
    """

    strategy = "local"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 40,
        context_margin: float = 0.15,
    ) -> None:
        from workers.detection import resolve_device, resolve_dtype

        if not model:
            raise ValueError("the local captioner needs a model id or folder")
        self.model_id = model
        resolved = resolve_device(device)
        self.processor, self.model = _load_local(model, resolved, resolve_dtype(dtype, resolved))
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.context_margin = context_margin
        self.chat = bool(getattr(self.processor, "chat_template", None))
        if self.chat:
            self.prompt_version = "local-chat-v1"
            self.prompt_text = LOCAL_CHAT_PROMPT
        else:
            self.prompt_version = "local-prefix-v1"
            self.prompt_text = "{phrase}"

    def _prompt(self, phrase: str) -> str:
        if not self.chat:
            return phrase.strip().lower()
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": LOCAL_CHAT_PROMPT.format(phrase=phrase)},
                ],
            }
        ]
        return str(self.processor.apply_chat_template(messages, add_generation_prompt=True))

    def caption(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]:
        images = _Images(self.context_margin)
        outcomes: dict[int, CaptionOutcome] = {}
        ready: dict[int, list[tuple[int, Image.Image, str]]] = defaultdict(list)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        for i, region in enumerate(regions):
            try:
                crop = images.crop(region)
            except (ValueError, OSError) as exc:
                outcomes[i] = CaptionOutcome(region.key, None, f"cannot crop the region: {exc}")
                continue
            prompt = self._prompt(region.phrase)
            length = len(tokenizer(prompt)["input_ids"])
            ready[length].append((i, crop, prompt))
        for group in ready.values():
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                for (i, _, _), outcome in zip(batch, self._generate(batch, regions), strict=True):
                    outcomes[i] = outcome
        return [outcomes[i] for i in range(len(regions))]

    def _generate(
        self, batch: list[tuple[int, Image.Image, str]], regions: Sequence[RegionToCaption]
    ) -> list[CaptionOutcome]:
        try:
            texts = self._run([crop for _, crop, _ in batch], [prompt for _, _, prompt in batch])
        except Exception as exc:  # a bad batch must not sink the run: try each item alone
            if len(batch) == 1:
                log.warning("local captioner failed on %s: %s", regions[batch[0][0]].key, exc)
                return [CaptionOutcome(regions[batch[0][0]].key, None, f"model error: {exc}")]
            return [self._generate([item], regions)[0] for item in batch]
        outcomes = []
        for (i, _, _), text in zip(batch, texts, strict=True):
            clean = " ".join(text.split())
            if clean:
                outcomes.append(CaptionOutcome(regions[i].key, clean))
            else:
                outcomes.append(CaptionOutcome(regions[i].key, None, "empty caption"))
        return outcomes

    def _run(self, crops: list[Image.Image], prompts: list[str]) -> list[str]:
        import torch

        inputs = self.processor(images=crops, text=prompts, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
            )
        prompt_ids = inputs["input_ids"]
        length = prompt_ids.shape[1]
        if output.shape[1] >= length and torch.equal(output[:, :length], prompt_ids):
            output = output[:, length:]  # decoder-only models echo the prompt
        return [str(t) for t in self.processor.batch_decode(output, skip_special_tokens=True)]


# --------------------------------------------------------------------------- LLM

LLM_PROMPT_VERSION = "llm-region-v1"
LLM_SYSTEM_PROMPT = (
    "You write region captions for a vision-language dataset. You get the caption of a whole "
    "image, a phrase naming one object in it, the object's bounding box, and a crop of that "
    "region. Describe that region in one concise sentence of at most 30 words: the object, "
    "its visible attributes (colour, material, state) and what it is doing or where it is. "
    "Describe only what is visible; do not repeat the whole-image caption. "
    'Answer with a JSON object {"caption": "..."} and nothing else.'
)
LLM_USER_PROMPT = (
    "Whole-image caption: {global_caption}\n"
    "Phrase: {phrase}\n"
    "Bounding box in pixels [x0, y0, x1, y1] of a {width}x{height} image: {box}\n"
    "Where it is: {position}"
)
MAX_CAPTION_CHARS = 400
MALFORMED_RETRIES = 1  # one more try when the answer is not the JSON asked for
REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i can not|i am unable|i'm unable|"
    r"i won'?t|as an ai)\b",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class AnswerProblem(ValueError):
    """The model answered, but not with a usable caption."""

    def __init__(self, reason: str, *, malformed: bool) -> None:
        super().__init__(reason)
        self.malformed = malformed


def parse_caption_answer(content: str | None, refusal: str | None = None) -> str:
    """The caption from a model's answer, or ``AnswerProblem`` saying what is wrong with it.

    >>> parse_caption_answer('{"caption": " A red  car parked by the kerb. "}')
    'A red car parked by the kerb.'
    >>> parse_caption_answer('```json\\n{"caption": "a dog"}\\n```')
    'a dog'
    >>> parse_caption_answer('{"caption": "I\\'m sorry, I can\\'t help with that."}')
    Traceback (most recent call last):
    ...
    workers.captioning.AnswerProblem: refused: I'm sorry, I can't help with that.
    >>> parse_caption_answer('a dog')
    Traceback (most recent call last):
    ...
    workers.captioning.AnswerProblem: malformed JSON: 'a dog'
    """
    if refusal:
        raise AnswerProblem(f"refused: {_clip(refusal)}", malformed=False)
    if not content or not content.strip():
        raise AnswerProblem("empty answer", malformed=True)
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        data = json.loads(text)
    except ValueError:
        raise AnswerProblem(f"malformed JSON: {_clip(content)!r}", malformed=True) from None
    if not isinstance(data, dict) or not isinstance(data.get("caption"), str):
        raise AnswerProblem(f'no "caption" string in {_clip(content)!r}', malformed=True)
    caption = " ".join(data["caption"].split())
    if not caption:
        raise AnswerProblem("empty caption", malformed=True)
    if REFUSAL.match(caption):
        raise AnswerProblem(f"refused: {_clip(caption)}", malformed=False)
    if len(caption) > MAX_CAPTION_CHARS:
        raise AnswerProblem(
            f"caption of {len(caption)} characters exceeds {MAX_CAPTION_CHARS}", malformed=True
        )
    return caption


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def image_data_url(crop: Image.Image, max_side: int) -> str:
    """The crop as a base64 JPEG data URL, no larger than ``max_side`` on its longer side."""
    if max(crop.size) > max_side:
        crop = crop.copy()
        crop.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class LlmCaptioner:
    """Captions regions through an OpenAI-compatible chat endpoint (see the module docstring).

    ``caption()`` is synchronous: it runs one event loop for the whole batch, with one
    ``AsyncOpenAI`` client (made per call, since an async client belongs to its loop) and at
    most ``concurrency`` requests in flight.
    """

    strategy = "llm"
    prompt_version = LLM_PROMPT_VERSION
    prompt_text = f"[system]\n{LLM_SYSTEM_PROMPT}\n[user]\n{LLM_USER_PROMPT}\n[image: region crop]"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str = "",
        timeout: float = 60.0,
        concurrency: int = 16,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen)
        context_margin: float = 0.15,
        image_max_side: int = 512,
        send_image: bool = True,
        max_tokens: int = 200,
        json_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        if not model:
            raise ValueError("the llm captioner needs a model name")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model_id, self.base_url, self.api_key = model, base_url, api_key
        self.timeout, self.concurrency, self.retry = timeout, concurrency, retry
        self.context_margin, self.image_max_side = context_margin, image_max_side
        self.send_image, self.max_tokens, self.json_mode = send_image, max_tokens, json_mode
        self.rng = random.Random(seed)

    def caption(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]:
        if not regions:
            return []
        return run_sync(self._caption_all(regions))

    async def _caption_all(self, regions: Sequence[RegionToCaption]) -> list[CaptionOutcome]:
        images = _Images(self.context_margin)
        semaphore = asyncio.Semaphore(self.concurrency)
        client = make_async_client(self.base_url, self.api_key, self.timeout)
        async with client:

            async def one(region: RegionToCaption) -> CaptionOutcome:
                async with semaphore:
                    return await self._caption_one(client, images, region)

            return list(await asyncio.gather(*(one(r) for r in regions)))

    def messages(self, region: RegionToCaption, images: _Images) -> list[dict[str, Any]]:
        box = "[" + ", ".join(f"{v:.0f}" for v in region.box) + "]"
        text = LLM_USER_PROMPT.format(
            global_caption=region.global_caption.strip() or "(none)",
            phrase=region.phrase,
            width=region.image_width,
            height=region.image_height,
            box=box,
            position=position_words(region.box, region.image_width, region.image_height),
        )
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if self.send_image and region.image is not None:
            url = image_data_url(images.crop(region), self.image_max_side)
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [
            {"role": "system", "content": LLM_SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ]

    async def _caption_one(
        self, client: openai.AsyncOpenAI, images: _Images, region: RegionToCaption
    ) -> CaptionOutcome:
        try:
            messages = self.messages(region, images)
        except (ValueError, OSError) as exc:
            return CaptionOutcome(region.key, None, f"cannot crop the region: {exc}")
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        prompt_tokens = completion_tokens = 0
        malformed_left = MALFORMED_RETRIES
        while True:
            attempted = await with_retries(
                lambda: post_chat_completion(client, body),
                self.retry,
                self.rng,
            )
            if attempted.failure is not None:
                failure = attempted.failure
                reason = failure.reason
                if failure.transient:
                    reason = f"gave up after {attempted.attempts} attempts: {reason}"
                return CaptionOutcome(
                    region.key,
                    None,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    retryable=failure.transient,
                )
            response = attempted.value
            if response.usage is not None:
                prompt_tokens += response.usage.prompt_tokens or 0
                completion_tokens += response.usage.completion_tokens or 0
            try:
                caption = self._read(response)
            except AnswerProblem as problem:
                if problem.malformed and malformed_left > 0:
                    malformed_left -= 1
                    continue
                return CaptionOutcome(
                    region.key, None, str(problem), prompt_tokens, completion_tokens
                )
            return CaptionOutcome(region.key, caption, None, prompt_tokens, completion_tokens)

    @staticmethod
    def _read(response: Any) -> str:
        if not response.choices:
            raise AnswerProblem("no choices in the answer", malformed=True)
        choice = response.choices[0]
        if choice.finish_reason == "content_filter":
            raise AnswerProblem("refused: stopped by the content filter", malformed=False)
        message = choice.message
        return parse_caption_answer(message.content, getattr(message, "refusal", None))


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
