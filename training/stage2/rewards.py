"""Rewards for Stage-2 RL (preprint §3.3.3, "Reinforcement Learning"), as small typed functions.

The policy M writes A_{k+1} from (I, Q, A_k, F_k). Its reward is the sum, weighted by
``RLConfig`` through TRL's ``reward_weights``, of:

- ``rm``: the rectification module judges (I, Q, A_{k+1}) with the critique prompt it was
  trained on; +1 (``accept``) when it answers "No further corrections needed.", otherwise a
  penalty (``reject``). This is the paper's "positive reward when A_{k+1} is visually
  consistent, negative for hallucinations". An empty or unusable critique (no letter or digit
  at all, as a local RM that stops at once returns) is never acceptance: it scores ``reject``,
  is counted as ``rm/unusable`` and logged. (The rectification loop still stops on an empty
  F_k, §3.3.3; only the reward refuses to read one as a verdict.)
- ``format``: 0 for a clean answer, a penalty for an empty one or one that leaks the prompt's
  scaffolding (``Feedback:``, ``Assistant (Revised):``, ``<image>``) or that simply writes the
  stop phrase, which would otherwise be a cheap way to talk a text RM into accepting.
- ``length``: 0 up to a target length, then a penalty growing with the excess (optional).

Each term has a pure scalar function with doctest examples (``rm_verdict_reward``,
``format_penalty``, ``length_penalty``) and a batch form with TRL's reward signature
``f(prompts, completions, **kwargs) -> list[float]``; dataset columns (``question``,
``evidence``, ``image_path``) arrive as keyword arguments. The RM term is async so the
critiques of a whole generation batch go out together (``asyncio.gather``), which is what makes
an endpoint RM (vLLM, an OpenAI-compatible server) keep up with the policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.formats import STOP_PHRASE, is_stop
from training.stage2.generation import GenerationError, Generator
from training.stage2.prompts import critique_prompt

log = logging.getLogger(__name__)

# TRL hands completions as plain strings for text prompts and as a one-message list
# ``[{"role": "assistant", "content": ...}]`` for conversational (chat) prompts.
Completion = str | Sequence[dict[str, Any]]

# Prompt scaffolding that must never appear in an answer: the revision prompt's own markers
# (prompts.revision_prompt) and the image placeholder of LLaVA-style chat templates.
LEAK_MARKERS = ("Feedback:", "Assistant (Revised):", "Assistant:", "User:", "<image>")


def completion_text(completion: Completion) -> str:
    """The text of one completion, whichever shape TRL passes it in.

    >>> completion_text("The cup is blue.")
    'The cup is blue.'
    >>> completion_text([{"role": "assistant", "content": "The cup is blue."}])
    'The cup is blue.'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}])
    'Blue.'
    """
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [p.get("text", "") for p in content if p.get("type") == "text"]
    return "".join(parts)


def is_unusable(feedback: str | None) -> bool:
    """Whether an RM critique carries no verdict at all: missing, empty, or without a single
    letter or digit (whitespace, punctuation), which is what a local RM that emits EOS at once
    or only special tokens decodes to.

    >>> is_unusable("")
    True
    >>> is_unusable(" ... ")
    True
    >>> is_unusable("No further corrections needed.")
    False
    >>> is_unusable("Le chat est à gauche.")
    False
    """
    return feedback is None or not any(ch.isalnum() for ch in feedback)


def rm_verdict_reward(feedback: str | None, *, accept: float = 1.0, reject: float = -1.0) -> float:
    """The reward for one RM verdict on A_{k+1}: ``accept`` on the stop phrase, else ``reject``.

    The verdict is read by ``formats.is_stop``, the same rule the rectification loop stops on,
    so RL optimises exactly what ends the loop at inference; except that an unusable critique
    (``is_unusable``: none, empty, no words), which ``is_stop`` reads as "nothing to correct",
    is a failure here, so a broken RM can never hand out acceptance.

    >>> rm_verdict_reward("No further corrections needed.")
    1.0
    >>> rm_verdict_reward("The cup is on the right, not the left.")
    -1.0
    >>> rm_verdict_reward("The cup is red.", accept=1.0, reject=-0.5)
    -0.5
    >>> rm_verdict_reward("")
    -1.0
    >>> rm_verdict_reward(None)
    -1.0
    """
    if is_unusable(feedback):
        return reject
    return accept if is_stop(feedback) else reject


def format_penalty(text: str, *, penalty: float = -1.0) -> float:
    """0 for a well-formed answer; ``penalty`` for an empty one, one that leaks the prompt's
    scaffolding, or one that only repeats the RM's stop phrase.

    >>> format_penalty("The cup is on the left of the plate.")
    0.0
    >>> format_penalty("   ")
    -1.0
    >>> format_penalty("The cup is blue. Feedback: good")
    -1.0
    >>> format_penalty("Assistant (Revised): The cup is blue.")
    -1.0
    >>> format_penalty("No further corrections needed.")
    -1.0
    >>> format_penalty("<image> a cup", penalty=-0.5)
    -0.5
    """
    stripped = text.strip()
    if not stripped:
        return penalty
    if any(marker.lower() in stripped.lower() for marker in LEAK_MARKERS):
        return penalty
    if is_stop(stripped) or STOP_PHRASE.lower() in stripped.lower():
        return penalty
    return 0.0


def length_penalty(length: int, *, target: int, per_unit: float = 0.01, cap: float = 1.0) -> float:
    """0 up to ``target`` tokens, then ``-per_unit`` per token beyond it, at most ``-cap``.

    A target of 0 (or less) switches the term off.

    >>> length_penalty(40, target=64)
    0.0
    >>> length_penalty(74, target=64)
    -0.1
    >>> length_penalty(1000, target=64)
    -1.0
    >>> length_penalty(1000, target=0)
    0.0
    """
    if target <= 0 or length <= target:
        return 0.0
    return -min(cap, round(per_unit * (length - target), 6))


def _texts(completions: Sequence[Completion]) -> list[str]:
    return [completion_text(c) for c in completions]


def format_reward(
    prompts: Sequence[Any], completions: Sequence[Completion], **kwargs: Any
) -> list[float]:
    """TRL form of ``format_penalty``: one value per completion.

    >>> format_reward(["p", "p"], ["The cup is blue.", "Feedback: the cup"])
    [0.0, -1.0]
    """
    return [format_penalty(text) for text in _texts(completions)]


@dataclass
class LengthReward:
    """TRL form of ``length_penalty``; lengths are completion tokens when TRL passes
    ``completion_ids``, else whitespace words.

    >>> LengthReward(target=3)(["p"], ["one two three four five"])
    [-0.02]
    >>> LengthReward(target=3)(["p"], ["x"], completion_ids=[[5, 6, 7, 8]])
    [-0.01]
    """

    target: int
    per_unit: float = 0.01

    def __post_init__(self) -> None:
        self.__name__ = "length"  # TRL names a reward's metrics after the callable's __name__

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        ids = kwargs.get("completion_ids")
        lengths = (
            [len(i) for i in ids]
            if ids is not None
            else [len(t.split()) for t in _texts(completions)]
        )
        return [length_penalty(n, target=self.target, per_unit=self.per_unit) for n in lengths]


def _column(kwargs: dict[str, Any], name: str, count: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        raise KeyError(
            f"the RM reward needs the dataset column {name!r} (one value per completion); "
            f"got columns {sorted(k for k in kwargs if not k.startswith('log_'))}"
        )
    if len(values) != count:
        raise ValueError(f"column {name!r} has {len(values)} values for {count} completions")
    return list(values)


@dataclass
class RMReward:
    """The RM as a reward: ``await RMReward(rm)(prompts, completions, question=..., evidence=...)``.

    ``rm`` is any ``generation.Generator`` (a local checkpoint or an OpenAI-compatible
    endpoint, from ``generators.make_generator``). The critiques of one call go out together,
    at most ``concurrency`` at a time. The image is sent only to a vision RM, read from the
    ``image_path`` column. When a critique fails for good (after the client's retries),
    ``on_error="raise"`` stops training, ``"skip"`` leaves that completion's RM term out (None,
    which TRL ignores in the weighted sum) and counts it in ``rm/failures``. A critique that
    arrives but is unusable (``is_unusable``: empty or without words) scores ``reject``, is
    counted in ``rm/unusable`` and logged as a warning.

    Each verdict is also logged next to the completion (TRL's ``log_extra``), and the share of
    accepted answers as the ``rm/accept_rate`` metric.
    """

    rm: Generator
    accept: float = 1.0
    reject: float = -1.0
    concurrency: int = 16
    max_new_tokens: int = 128
    on_error: str = "raise"
    samples_path: Path | None = None  # where to append a few judged completions per call
    samples_per_call: int = 4
    last_feedback: list[str | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error is 'raise' or 'skip', got {self.on_error!r}")
        self.__name__ = "rm"  # TRL names a reward's metrics after the callable's __name__
        self._images: dict[str, bytes] = {}

    def _image(self, path: str | None) -> bytes | None:
        if not self.rm.vision or not path:
            return None
        if path not in self._images:
            if len(self._images) > 256:  # a small cache: a group shares one image
                self._images.clear()
            self._images[path] = Path(path).read_bytes()
        return self._images[path]

    async def _critique(
        self, limit: asyncio.Semaphore, question: str, answer: str, evidence: str, image: Any
    ) -> str | None:
        async with limit:
            try:
                generation = await self.rm.generate(
                    critique_prompt(question, answer, evidence),
                    image=self._image(image),
                    max_new_tokens=self.max_new_tokens,
                )
            except GenerationError:
                if self.on_error == "raise":
                    raise
                return None
        return generation.text

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float | None]:
        count = len(completions)
        questions = _column(kwargs, "question", count)
        evidence = kwargs.get("evidence") or [""] * count
        images = kwargs.get("image_path") or [None] * count
        limit = asyncio.Semaphore(max(1, self.concurrency))
        feedback = await asyncio.gather(
            *(
                self._critique(limit, q, text, e or "", img)
                for q, text, e, img in zip(
                    questions, _texts(completions), evidence, images, strict=True
                )
            )
        )
        self.last_feedback = list(feedback)
        rewards: list[float | None] = [
            None if f is None else rm_verdict_reward(f, accept=self.accept, reject=self.reject)
            for f in feedback
        ]
        unusable = [f for f in feedback if f is not None and is_unusable(f)]
        if unusable:
            log.warning(
                "RM %s returned %d unusable critique(s) of %d (e.g. %r), scored as rejections",
                self.rm.name,
                len(unusable),
                count,
                unusable[0],
            )
        _log(kwargs, feedback, rewards)
        if self.samples_path is not None and self.samples_per_call > 0:
            self._write_samples(kwargs, questions, completions, feedback, rewards)
        return rewards

    def _write_samples(
        self,
        kwargs: dict[str, Any],
        questions: list[Any],
        completions: Sequence[Completion],
        feedback: list[str | None],
        rewards: list[float | None],
    ) -> None:
        """Append the first ``samples_per_call`` judged completions to ``samples_path`` (one
        JSON line each: step, question, answer, the RM's feedback, reward), on the main rank
        only, so a person can read what RL is producing and how the RM judged it."""
        state = kwargs.get("trainer_state")
        if state is not None and not getattr(state, "is_world_process_zero", True):
            return
        step = getattr(state, "global_step", None)
        rows = zip(questions, _texts(completions), feedback, rewards, strict=True)
        assert self.samples_path is not None
        with self.samples_path.open("a", encoding="utf-8") as handle:
            for question, answer, verdict, reward in list(rows)[: self.samples_per_call]:
                line = {
                    "step": None if step is None else step + 1,  # the step being trained
                    "question": question,
                    "answer": answer,
                    "rm_feedback": verdict,
                    "rm_reward": reward,
                }
                handle.write(json.dumps(line) + "\n")


def _log(kwargs: dict[str, Any], feedback: list[str | None], rewards: list[float | None]) -> None:
    log_extra: Callable[[str, list], None] | None = kwargs.get("log_extra")
    log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
    if log_extra is not None:
        log_extra("rm_feedback", [_shown(f) for f in feedback])
    if log_metric is not None:
        judged = [f for f in feedback if f is not None]
        accepted = sum(not is_unusable(f) and is_stop(f) for f in judged)
        log_metric("rm/accept_rate", accepted / max(1, len(judged)))
        log_metric("rm/failures", float(sum(r is None for r in rewards)))
        log_metric("rm/unusable", float(sum(is_unusable(f) for f in judged)))


def _shown(feedback: str | None) -> str:
    if feedback is None:
        return "(failed)"
    return f"(unusable: {feedback!r})" if is_unusable(feedback) else feedback
