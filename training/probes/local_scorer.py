"""A local checkpoint (folder, hub id or LoRA adapter folder) answering probes in batches.

The model, its processor and the prompt rendering are those of the rectification loop's
``training.stage2.local.LocalGenerator``: the probe's question becomes the user turn of the
model's own chat template with an image part, so the processor expands ``<image>`` into the
model's image tokens exactly as it does for M. ``generate_batch_sync`` runs one left-padded,
greedy ``model.generate`` per batch; bf16 on CUDA, fp32 on a CPU (``training.devices``).

While a batch generates, a helper thread reads the next batch's image bytes from disk, so the
accelerator does not wait on the file system. A batch whose images cannot be read or decoded
is answered again one probe at a time, so one broken image fails only its own probe; an error
of the model itself (out of memory) stops the run.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any

from training.probes.answers import Answer, Question, Sink


class LocalScorer:
    """``LocalScorer.load(spec, ...)`` loads the model; ``LocalScorer(generator)`` wraps one
    already in memory (the GPU benchmark's random-weight 7B, which is never saved)."""

    def __init__(self, generator: Any, *, batch_size: int = 8) -> None:
        if not generator.vision:
            raise ValueError(
                f"{generator.name}: a text-only model cannot answer questions about images"
            )
        self.generator = generator
        self.batch_size = max(1, batch_size)

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        device: str = "auto",
        dtype: str = "auto",
    ) -> LocalScorer:
        from training.stage2.local import LocalGenerator

        generator = LocalGenerator.from_pretrained(
            spec, device=device, dtype=dtype, max_new_tokens=max_new_tokens
        )
        return cls(generator, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        model = self.generator.model
        return {
            "backend": "local",
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
        }

    def answer_all(self, questions: Sequence[Question], sink: Sink) -> None:
        batches = [
            list(questions[start : start + self.batch_size])
            for start in range(0, len(questions), self.batch_size)
        ]
        if not batches:
            return
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe-images") as pool:
            pending = pool.submit(_read_images, batches[0])
            for number, batch in enumerate(batches):
                images = pending.result()
                if number + 1 < len(batches):
                    pending = pool.submit(_read_images, batches[number + 1])
                self._answer_batch(batch, images, sink)

    def _answer_batch(
        self, batch: list[Question], images: list[bytes | Exception], sink: Sink
    ) -> None:
        readable = [image for image in images if isinstance(image, bytes)]
        if len(readable) == len(images):
            try:
                texts, latency_ms = self._generate(
                    [(q.prompt, image) for q, image in zip(batch, readable, strict=True)]
                )
            except (OSError, ValueError) as err:  # an image PIL cannot decode, a bad file
                if len(batch) == 1:
                    sink(batch[0].index, Answer(None, 0, f"{type(err).__name__}: {err}"))
                    return
            else:
                for question, text in zip(batch, texts, strict=True):
                    sink(question.index, Answer(text, latency_ms))
                return
        for question, image in zip(batch, images, strict=True):  # one at a time
            if isinstance(image, Exception):
                sink(question.index, Answer(None, 0, f"{type(image).__name__}: {image}"))
            else:
                self._answer_batch([question], [image], sink)

    def _generate(self, requests: list[tuple[str, bytes | None]]) -> tuple[list[str], int]:
        started = time.perf_counter()
        results = self.generator.generate_batch_sync(requests)
        latency_ms = round(1000 * (time.perf_counter() - started))
        return [result.text for result in results], latency_ms


def _read_images(batch: list[Question]) -> list[bytes | Exception]:
    images: list[bytes | Exception] = []
    for question in batch:
        try:
            images.append(question.image())
        except (OSError, ValueError) as err:  # ProbeSetError is a ValueError
            images.append(err)
    return images
