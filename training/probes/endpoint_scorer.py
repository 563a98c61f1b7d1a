"""An OpenAI-compatible endpoint (``URL#MODEL``: vLLM, Ollama, OpenAI...) answering probes.

The calls are those of the rectification loop's ``training.stage2.generators.EndpointGenerator``
(the ``openai`` client, the image as a ``data:`` URL part of the user message, temperature 0,
retries with backoff on 408/409/429/5xx and timeouts from ``training.llm``), with at most
``concurrency`` requests in flight (an ``asyncio.Semaphore``). A probe whose call fails for good
(a permanent HTTP error, retries used up, an empty answer, an unreadable image) is recorded with
its error and no answer; the run goes on, and the failure counts as unparsed by every parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from training.llm import RetryPolicy, run_sync
from training.probes.answers import Answer, Question, Sink


class EndpointScorer:
    def __init__(
        self,
        spec: str,
        *,
        concurrency: int = 16,
        max_new_tokens: int = 16,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        from training.stage2.generators import EndpointGenerator

        self.concurrency = max(1, concurrency)
        self.generator = EndpointGenerator.from_spec(
            spec,
            vision=True,
            max_new_tokens=max_new_tokens,
            timeout=timeout,
            retry=retry or RetryPolicy(),
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": "endpoint", "concurrency": self.concurrency}

    def answer_all(self, questions: Sequence[Question], sink: Sink) -> None:
        run_sync(self.answer_all_async(questions, sink))  # also from inside a running loop

    async def answer_all_async(self, questions: Sequence[Question], sink: Sink) -> None:
        from training.stage2.generation import GenerationError

        gate = asyncio.Semaphore(self.concurrency)

        async def one(question: Question) -> None:
            async with gate:
                try:
                    image = await asyncio.to_thread(question.image)
                    answer = await self.generator.generate(question.prompt, image=image)
                except (GenerationError, OSError, ValueError) as err:
                    sink(question.index, Answer(None, 0, f"{type(err).__name__}: {err}"))
                    return
                sink(question.index, Answer(answer.text, round(1000 * answer.latency_s)))

        try:
            await asyncio.gather(*(one(question) for question in questions))
        finally:
            await self.generator.aclose()
