"""Where the text of M and the RM comes from: an OpenAI-compatible endpoint or a local model.

Both sides of the loop are a ``Generator`` (``training.stage2.generation``): ``await
generate(prompt, image=...)`` returns the text and how long the call took. The rectification
loop, the trajectory worker and the evaluation job only see this protocol, so each of M and RM
can independently be an endpoint (through the ``openai`` client and the retry policy of
``training.llm``, shared with the captioner) or a local ``transformers`` checkpoint
(``training.stage2.local``).

A model is named by one string, a *spec*:

- ``URL#MODEL`` for an endpoint, e.g. ``http://127.0.0.1:8000/v1#llava-1.5-7b``; the key comes
  from ``FGAM_LLM_API_KEY`` (or ``OPENAI_API_KEY``), none is needed for a local server;
- anything else is a local folder or a Hugging Face model id, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from training.llm import (
    RetryPolicy,
    image_data_url,
    make_async_client,
    post_chat_completion,
    with_retries,
)
from training.stage2.generation import Generation, GenerationError, Generator


def is_endpoint_spec(spec: str) -> bool:
    return spec.startswith(("http://", "https://")) and "#" in spec


@dataclass
class EndpointGenerator:
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

    Greedy by default (temperature 0) so a run is as repeatable as the server allows.
    Transient failures (timeouts, 429, 5xx) are retried with backoff by ``training.llm``;
    permanent ones and empty or malformed answers raise ``GenerationError``.
    """

    base_url: str
    model: str
    api_key: str = ""
    vision: bool = False
    timeout: float = 60.0
    max_new_tokens: int = 512
    temperature: float = 0.0
    system: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int = 0

    def __post_init__(self) -> None:
        self.name = self.model
        self._client: Any = None
        self._rng = random.Random(self.seed)

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> EndpointGenerator:
        base_url, _, model = spec.partition("#")
        if not model:
            raise ValueError(f"endpoint spec {spec!r} needs '#MODEL' after the URL")
        key = os.environ.get("FGAM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        return cls(base_url=base_url, model=model, api_key=key, **options)

    def _body(self, prompt: str, image: bytes | None, max_new_tokens: int | None) -> dict:
        content: Any = prompt
        if image is not None and self.vision:
            content = [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                {"type": "text", "text": prompt},
            ]
        messages = [{"role": "user", "content": content}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": max_new_tokens or self.max_new_tokens,
        }

    async def generate(
        self, prompt: str, *, image: bytes | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        if self._client is None:
            self._client = make_async_client(self.base_url, self.api_key, self.timeout)
        body = self._body(prompt, image, max_new_tokens)
        started = time.perf_counter()
        attempted = await with_retries(
            lambda: post_chat_completion(self._client, body), self.retry, self._rng
        )
        latency = time.perf_counter() - started
        if attempted.failure is not None:
            raise GenerationError(
                f"{self.model}: {attempted.failure.reason} after {attempted.attempts} attempt(s)"
            )
        completion = attempted.value
        choices = getattr(completion, "choices", None) or []
        text = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(text, str) or not text.strip():
            raise GenerationError(f"{self.model}: the endpoint answered no text")
        usage = getattr(completion, "usage", None)
        return Generation(
            text=text.strip(),
            latency_s=latency,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_generator(spec: str, **options: Any) -> Generator:
    """The generator a spec names (see the module docstring).

    Options apply to either kind where they make sense: ``vision``, ``max_new_tokens``,
    ``timeout`` and ``temperature`` for endpoints; ``device``, ``dtype`` and
    ``max_new_tokens`` for local models.
    """
    if is_endpoint_spec(spec):
        allowed = {"vision", "max_new_tokens", "timeout", "temperature", "system", "retry", "seed"}
        return EndpointGenerator.from_spec(
            spec, **{k: v for k, v in options.items() if k in allowed}
        )
    from training.stage2.local import LocalGenerator

    return LocalGenerator.from_pretrained(spec, **options)


async def close_all(*generators: Generator) -> None:
    await asyncio.gather(*(g.aclose() for g in generators))
