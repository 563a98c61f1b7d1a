"""A local ``transformers`` checkpoint as a ``Generator`` (M or the RM of the rectification loop).

``LocalGenerator.from_pretrained(spec)`` takes a hub id or a folder and loads

- an image-text-to-text model (LLaVA and kin: the config has a ``vision_config``) with
  ``AutoModelForImageTextToText`` + ``AutoProcessor``; the image goes in as an image content
  part of the user turn, so the processor expands it into the model's image tokens;
- otherwise a causal LM with ``AutoModelForCausalLM`` + ``AutoTokenizer`` (a text RM);
- a LoRA adapter folder (``adapter_config.json``, as ``python -m training sft lora=true``
  writes into ``final/``): its base model is loaded, then the adapter, merged for speed.

The prompt from ``training.stage2.prompts`` becomes the user turn of the model's own chat
template when it has one. Decoding is greedy unless ``temperature > 0``.

``generate`` is async so a local model and an endpoint are interchangeable in the loop: the
blocking ``model.generate`` runs in a worker thread (``asyncio.to_thread``) under a lock, so one
model serves one call at a time while the event loop keeps other items' endpoint calls going.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.devices import resolve_device, resolve_dtype
from training.stage2.generation import Generation, GenerationError


def adapter_base(folder: str | Path) -> str | None:
    """The base model of a peft adapter folder, or None when ``folder`` is not an adapter."""
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise GenerationError(f"{config}: no base_model_name_or_path; cannot load the adapter")
    return str(base)


def is_vision_config(config: Any) -> bool:
    """Whether a transformers config describes an image-text-to-text model."""
    return getattr(config, "vision_config", None) is not None


def load_model_and_processor(
    spec: str, *, device: Any, dtype: Any, merge_adapter: bool = True
) -> tuple[Any, Any, bool]:
    """``(model, processor or tokenizer, is_vision)`` for a hub id, a folder or an adapter."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    from training.models_available import check_model

    check_model(spec, role="model")
    base = adapter_base(spec) if Path(spec).is_dir() else None
    weights = base or spec
    if base is not None:
        check_model(base, role=f"the base model of the adapter {spec}")
    vision = is_vision_config(AutoConfig.from_pretrained(weights))
    auto_model = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    model: Any = auto_model.from_pretrained(weights, dtype=dtype)
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec)
        if merge_adapter:
            model = model.merge_and_unload()
    # The adapter folder carries its own processor when our trainer wrote it; else the base's.
    source = spec if _has_tokenizer(spec) else weights
    processor = (AutoProcessor if vision else AutoTokenizer).from_pretrained(source)
    model.to(device)
    model.eval()
    return model, processor, vision


def _has_tokenizer(spec: str) -> bool:
    folder = Path(spec)
    return folder.is_dir() and any(
        (folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )


@dataclass
class LocalGenerator:
    """One loaded model behind the ``Generator`` protocol. Build it with ``from_pretrained``."""

    name: str
    model: Any
    processor: Any  # AutoProcessor for a vision model, AutoTokenizer for a text model
    vision: bool
    max_new_tokens: int = 256
    temperature: float = 0.0
    system: str | None = None
    max_batch: int = 1  # >1: concurrent generate() calls share one batched model.generate
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _batcher: Batcher | None = field(default=None, repr=False)

    @classmethod
    def from_pretrained(
        cls,
        spec: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        system: str | None = None,
        vision: bool | None = None,
        max_batch: int = 1,
        **endpoint_only: Any,
    ) -> LocalGenerator:
        """Load ``spec`` (hub id, folder or adapter folder).

        ``vision=False`` keeps a vision model from receiving the image (a vision model used as
        a text-only RM); ``vision=True`` on a text model is an error. Endpoint-only options
        (``timeout``, ``retry``, ``seed``) are accepted and ignored so callers can pass one set
        of options to ``make_generator`` whatever the spec.
        """
        unknown = set(endpoint_only) - {"timeout", "retry", "seed"}
        if unknown:
            raise TypeError(f"LocalGenerator: unknown option(s) {', '.join(sorted(unknown))}")
        import torch

        torch_device = torch.device(resolve_device(device))
        model, processor, is_vision = load_model_and_processor(
            spec,
            device=torch_device,
            dtype=getattr(torch, resolve_dtype(dtype, str(torch_device))),
        )
        if vision and not is_vision:
            raise GenerationError(f"{spec}: vision=True but this is a text-only model")
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer.pad_token is None:  # Llama-style: batches pad with EOS (masked anyway)
            tokenizer.pad_token = tokenizer.eos_token
        return cls(
            name=spec,
            model=model,
            processor=processor,
            vision=is_vision if vision is None else vision,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            system=system,
            max_batch=max_batch,
        )

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def render(self, prompt: str, *, with_image: bool) -> str:
        """The model's input text: the prompt as the user turn of its chat template (with an
        image part when ``with_image``), or the bare prompt when it has no template."""
        image_token = getattr(self.processor, "image_token", "<image>")
        if not getattr(self.processor, "chat_template", None) and not getattr(
            self.tokenizer, "chat_template", None
        ):
            return f"{image_token}\n{prompt}" if with_image else prompt
        content: Any = prompt
        if hasattr(self.processor, "image_processor"):  # VLM processors want typed parts
            content = ([{"type": "image"}] if with_image else []) + [
                {"type": "text", "text": prompt}
            ]
        messages = [{"role": "user", "content": content}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return str(
            self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def encode(self, prompt: str, image: bytes | None) -> Any:
        """Model inputs (token ids, attention mask, pixel values) for one prompt."""
        return self.encode_batch([(prompt, image)], with_image=image is not None and self.vision)

    def _pad_id(self) -> int | None:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def generate_sync(
        self, prompt: str, *, image: bytes | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        """The blocking call behind ``generate``: one prompt, greedy (or sampled) decoding."""
        return self.generate_batch_sync([(prompt, image)], max_new_tokens=max_new_tokens)[0]

    def generate_batch_sync(
        self, requests: list[tuple[str, bytes | None]], *, max_new_tokens: int | None = None
    ) -> list[Generation]:
        """Several ``(prompt, image)`` in one left-padded ``model.generate``; either every
        request sends an image or none does. Each result's ``latency_s`` is the batch's."""
        import torch

        with_images = [image is not None and self.vision for _, image in requests]
        if any(with_images) and not all(with_images):
            raise ValueError("a batch mixes requests with and without an image")
        with self._lock:
            started = time.perf_counter()
            inputs = self.encode_batch(requests, with_image=all(with_images)).to(self.model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            options: dict[str, Any] = {
                "max_new_tokens": max_new_tokens or self.max_new_tokens,
                "pad_token_id": self._pad_id(),
            }
            if self.temperature > 0:
                options |= {"do_sample": True, "temperature": self.temperature}
            else:
                options |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            with torch.inference_mode():
                output = self.model.generate(**inputs, **options)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]  # [batch, generated]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            latency = time.perf_counter() - started
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            Generation(
                text=text.strip(),
                latency_s=latency,
                prompt_tokens=int(length),
                completion_tokens=self._answer_length(row),
            )
            for text, length, row in zip(texts, prompt_lengths, new_tokens, strict=True)
        ]

    def _answer_length(self, tokens: Any) -> int:
        """Generated tokens before the first EOS (rows of a batch are padded after theirs)."""
        eos = self.tokenizer.eos_token_id
        ids = tokens.tolist()
        return ids.index(eos) if eos is not None and eos in ids else len(ids)

    def encode_batch(self, requests: list[tuple[str, bytes | None]], *, with_image: bool) -> Any:
        """Left-padded model inputs for several prompts (decoder-only generation pads left)."""
        texts = [self.render(prompt, with_image=with_image) for prompt, _ in requests]
        self.tokenizer.padding_side = "left"
        if with_image:
            from training.data.version import open_image

            return self.processor(
                images=[open_image(image) for _, image in requests if image is not None],
                text=texts,
                padding=True,
                return_tensors="pt",
                add_special_tokens=False,
            )
        return self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)

    async def generate(
        self, prompt: str, *, image: bytes | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        """``generate_sync`` in a worker thread, so the event loop is never blocked; with
        ``max_batch > 1``, calls that arrive together are answered by one batched generate."""
        if self.max_batch <= 1:
            return await asyncio.to_thread(
                self.generate_sync, prompt, image=image, max_new_tokens=max_new_tokens
            )
        if self._batcher is None:
            with self._lock:
                if self._batcher is None:
                    self._batcher = Batcher(self, self.max_batch)
        future = self._batcher.submit(prompt, image, max_new_tokens)
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        """Nothing to close: the model lives as long as this object."""


@dataclass
class _Request:
    prompt: str
    image: bytes | None
    max_new_tokens: int | None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    @property
    def kind(self) -> tuple[bool, int | None]:
        return self.image is not None, self.max_new_tokens


class Batcher:
    """One daemon thread that answers queued requests in batches of up to ``size``.

    It takes the oldest request and whatever compatible requests (same image-or-not, same
    ``max_new_tokens``) are already waiting, runs them as one ``generate_batch_sync`` and
    resolves their futures; incompatible ones wait for the next round, in order. Futures are
    ``concurrent.futures`` ones, so callers on any event loop (or none) can wait on them.
    """

    def __init__(self, generator: LocalGenerator, size: int) -> None:
        self.generator, self.size = generator, size
        self.queue: queue.Queue[_Request] = queue.Queue()
        self.waiting: list[_Request] = []
        threading.Thread(target=self._serve, name="fgam-local-batcher", daemon=True).start()

    def submit(
        self, prompt: str, image: bytes | None, max_new_tokens: int | None
    ) -> concurrent.futures.Future:
        request = _Request(prompt, image, max_new_tokens)
        self.queue.put(request)
        return request.future

    def _next_batch(self) -> list[_Request]:
        if not self.waiting:
            self.waiting.append(self.queue.get())  # block until there is work
        while True:  # take everything already queued, without waiting for more
            try:
                self.waiting.append(self.queue.get_nowait())
            except queue.Empty:
                break
        kind = self.waiting[0].kind
        batch = [r for r in self.waiting if r.kind == kind][: self.size]
        self.waiting = [r for r in self.waiting if all(r is not b for b in batch)]
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = self.generator.generate_batch_sync(
                    [(r.prompt, r.image) for r in batch],
                    max_new_tokens=batch[0].max_new_tokens,
                )
            except Exception as err:  # every caller of the batch gets the error
                for request in batch:
                    request.future.set_exception(err)
                continue
            for request, result in zip(batch, results, strict=True):
                request.future.set_result(result)
