"""What M and the RM give back, whichever kind of model they are: the ``Generator`` protocol.

An endpoint (``training.stage2.generators``) and a local checkpoint (``training.stage2.local``)
both answer with a ``Generation`` and fail with ``GenerationError``; the rectification loop, the
rewards and the trajectory worker see only these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Generation:
    """One answer of a model: its text, the wall time of the call, and tokens when known."""

    text: str
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationError(RuntimeError):
    """A call that failed for good (after retries) or answered something unusable."""


@runtime_checkable
class Generator(Protocol):
    name: str  # the model id recorded in provenance
    vision: bool  # whether the image is passed to the model

    async def generate(
        self, prompt: str, *, image: bytes | None = None, max_new_tokens: int | None = None
    ) -> Generation: ...

    async def aclose(self) -> None: ...
