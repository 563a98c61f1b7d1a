"""The ``llm`` caption strategy, the preprint's strategy (b): an OpenAI-compatible endpoint
gets the global caption T, the phrase, the box and the region crop, and answers
``{"caption": "..."}``.

Requests go through the official ``openai`` client and the retry policy of ``training.llm``
(transient failures retried with backoff, permanent ones recorded on the region's outcome);
an answer that is not the JSON asked for is asked again once, a refusal is recorded. Chosen
through ``workers.captioning.make_captioner``; the region types and the crops come
from ``workers.region_captions``.

No Django here.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from training.formats import position_words
from training.llm import (
    RetryPolicy,
    image_data_url,
    make_async_client,
    post_chat_completion,
    run_sync,
    with_retries,
)
from workers.region_captions import CaptionOutcome, RegionCrops, RegionToCaption

if TYPE_CHECKING:
    import openai
    from PIL import Image

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
    workers.captioning_llm.AnswerProblem: refused: I'm sorry, I can't help with that.
    >>> parse_caption_answer('a dog')
    Traceback (most recent call last):
    ...
    workers.captioning_llm.AnswerProblem: malformed JSON: 'a dog'
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


def jpeg_bytes(crop: Image.Image, max_side: int) -> bytes:
    """The crop as a JPEG (quality 85), no larger than ``max_side`` on its longer side."""
    if max(crop.size) > max_side:
        crop = crop.copy()
        crop.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


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
        images = RegionCrops(self.context_margin)
        semaphore = asyncio.Semaphore(self.concurrency)
        client = make_async_client(self.base_url, self.api_key, self.timeout)
        async with client:

            async def one(region: RegionToCaption) -> CaptionOutcome:
                async with semaphore:
                    return await self._caption_one(client, images, region)

            return list(await asyncio.gather(*(one(r) for r in regions)))

    def messages(self, region: RegionToCaption, images: RegionCrops) -> list[dict[str, Any]]:
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
            url = image_data_url(jpeg_bytes(images.crop(region), self.image_max_side))
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [
            {"role": "system", "content": LLM_SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ]

    async def _caption_one(
        self, client: openai.AsyncOpenAI, images: RegionCrops, region: RegionToCaption
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
