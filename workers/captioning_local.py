"""The ``local`` caption strategy, the preprint's strategy (a): a ``transformers``
image-to-text checkpoint captions each region crop, in batches, loaded once per process.

Anything ``AutoModelForImageTextToText`` loads works (BLIP, GIT, LLaVA, Qwen-VL...). Chosen
through ``workers.captioning.make_captioner``; the region types and the crops come
from ``workers.region_captions``.

No Django here.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from training.devices import resolve_device, resolve_dtype
from training.models_available import check_model
from workers.region_captions import CaptionOutcome, RegionCrops, RegionToCaption

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

LOCAL_CHAT_PROMPT = (
    "Describe the {phrase} in this picture in one short sentence: what it looks like and "
    "what it is doing."
)


@functools.cache
def _load_local(model: str, device: str, dtype: str) -> tuple[Any, Any]:
    check_model(model, role="captioner")  # before torch loads: a missing model fails at once
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
        images = RegionCrops(self.context_margin)
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
