"""Calling an OpenAI-compatible endpoint robustly: one async client, bounded concurrency, our
own retries, the image part of a message and what a run's tokens cost. Used by the LLM captioner
(``workers.captioning_llm``) and by Stage 2's endpoint generator
(``training.stage2.generators``), which the trajectory worker and the evaluation job run; it
lives in ``training`` so imports run one way, webapp -> workers -> training.

The official ``openai`` client is created with ``max_retries=0``: retries happen here, so that
the backoff, the ``Retry-After`` handling and the line between transient and permanent
failures are ours and tested (healthchecks' ``TransportError(permanent=...)`` idea):

- transient (retried with exponential backoff and jitter, or after ``Retry-After``):
  HTTP 408, 409, 429 and 5xx, timeouts, connection errors;
- permanent (recorded on the item at once): any other HTTP error (400, 401, 403, 404, 422...).

No Django here.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the client costs ~0.4 s to import; the web process only needs it lazily
    import openai
    from openai.types.chat import ChatCompletion

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 120.0  # a server asking for longer than this is not waited on longer


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # attempts after the first
    backoff_base: float = 0.5  # seconds; the n-th retry waits about base * 2**n
    backoff_max: float = 30.0


@dataclass(frozen=True)
class Failure:
    """What went wrong with one request: whether it is worth retrying, why, and when."""

    transient: bool
    reason: str
    retry_after: float | None = None


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms``, ``retry-after`` in seconds or as
    an HTTP date. None when absent or unreadable.

    >>> parse_retry_after({"retry-after": "2"})
    2.0
    >>> parse_retry_after({"retry-after-ms": "250", "retry-after": "9"})
    0.25
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> parse_retry_after({"retry-after": "soon"}) is None
    True
    """
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lower:
            return max(float(lower["retry-after-ms"]) / 1000, 0.0)
        value = lower.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(parsed.timestamp() - (time.time() if now is None else now), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def classify(exc: BaseException) -> Failure:
    """Sort an exception from the ``openai`` client into transient or permanent."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Failure(True, "timeout")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(True, f"connection error: {exc}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"HTTP {status}: {_short(exc.message)}"
        if status in TRANSIENT_STATUS or status >= 500:
            return Failure(True, detail, parse_retry_after(exc.response.headers))
        return Failure(False, detail)
    return Failure(False, f"{type(exc).__name__}: {_short(str(exc))}")


def backoff_delay(
    retry: int, policy: RetryPolicy, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``retry`` (0-based).

    ``Retry-After`` wins when the server gives one (capped at ``MAX_RETRY_AFTER_S``);
    otherwise "equal jitter": half of ``min(max, base * 2**retry)`` plus a random share of
    the other half, so concurrent clients do not retry in lockstep.

    >>> policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    >>> [0.5 <= backoff_delay(0, policy, None, random.Random(s)) <= 1.0 for s in range(3)]
    [True, True, True]
    >>> 4.0 <= backoff_delay(5, policy, None, random.Random(0)) <= 8.0
    True
    >>> backoff_delay(0, policy, 3.0, random.Random(0))
    3.0
    """
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    ceiling = min(policy.backoff_max, policy.backoff_base * 2**retry)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class Attempted:
    """The result of ``with_retries``: the value, or the last failure; and the attempt count."""

    value: Any = None
    failure: Failure | None = None
    attempts: int = 0


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
    on_failure: Callable[[Failure], None] | None = None,
) -> Attempted:
    """Await ``call()`` until it succeeds, fails permanently or runs out of retries."""
    import openai

    attempts = 0
    while True:
        attempts += 1
        try:
            return Attempted(value=await call(), attempts=attempts)
        except (openai.APIError, OSError) as exc:
            failure = classify(exc)
        if on_failure is not None:
            on_failure(failure)
        if not failure.transient or attempts > policy.max_retries:
            return Attempted(failure=failure, attempts=attempts)
        await asyncio.sleep(backoff_delay(attempts - 1, policy, failure.retry_after, rng))


def make_async_client(base_url: str, api_key: str, timeout: float) -> openai.AsyncOpenAI:
    """The one client a batch uses; the SDK's own retries are off (we retry ourselves)."""
    import openai

    return openai.AsyncOpenAI(
        base_url=base_url or None,
        api_key=api_key or "not-needed",
        timeout=timeout,
        max_retries=0,
    )


async def post_chat_completion(
    client: openai.AsyncOpenAI, body: Mapping[str, Any]
) -> ChatCompletion:
    """``POST /chat/completions`` with a body that is already plain JSON.

    The same request ``client.chat.completions.create(**body)`` sends, through the client's
    documented ``post`` (auth, base URL, timeout, typed errors and typed response all
    included), minus the recursive TypedDict transform of the arguments: with an image part in
    every request that transform was about 40% of the client's CPU per request, which caps
    throughput at high concurrency on a small machine.
    """
    from openai.types.chat import ChatCompletion

    return await client.post("/chat/completions", body=dict(body), cast_to=ChatCompletion)


def image_data_url(data: bytes) -> str:
    """A ``data:`` URL for an image part, with the media type sniffed from its first bytes.

    >>> image_data_url(b"\\x89PNG\\r\\n\\x1a\\n")
    'data:image/png;base64,iVBORw0KGgo='
    >>> image_data_url(b"\\xff\\xd8\\xff\\xe0").startswith("data:image/jpeg;base64,")
    True
    """
    kind = (
        "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "webp" if data[8:12] == b"WEBP" else "jpeg"
    )
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


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


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from synchronous code (a Celery task).

    ``asyncio.run`` when no loop runs in this thread; inside a running loop (a notebook, an
    async caller) the coroutine runs on a fresh loop in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="fgam-llm-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
