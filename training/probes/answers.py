"""What the two scorer back ends (``local_scorer``, ``endpoint_scorer``) take and give back.

A back end gets a list of ``Question`` and calls ``sink(index, Answer)`` once per question, in
any order, from one thread (the caller's, or the event loop's); the scorer writes the
predictions in probe order whatever order the answers come in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    index: int  # position in the probe set's order
    prompt: str  # the probe's question plus the scorer's prompt suffix
    image: Callable[[], bytes]  # reads the image's bytes when the back end needs them


@dataclass(frozen=True)
class Answer:
    """The raw text of one answer, or ``error`` (text None) when the call failed for good.

    ``latency_ms`` is the wall time of the call that produced it: for a batched local model,
    the whole batch's ``generate`` (every probe of a batch waited that long); for an endpoint,
    the request including its retries.
    """

    text: str | None
    latency_ms: int
    error: str | None = None


Sink = Callable[[int, Answer], None]
