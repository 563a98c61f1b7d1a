"""Stage-2 supervised data: rows of a dataset version -> (prompt, target, image) examples ->
padded batches whose labels supervise the target tokens only.

- SFT of M (Eq. 7): the user turn is ``revision_prompt(Q, A_k, F_k)`` with the image; the
  target is A*_{k+1}.
- RM training: the user turn is ``critique_prompt(Q, A_k, evidence)`` (with the image for a
  vision RM); the target is F_k, which is the stop phrase on approved final steps.

Label masking. The conversation is rendered by the model's own chat template twice: the user
turn with the generation prompt (the *prompt*), and user + assistant turns (the *full* text).
The prompt must be a prefix of the full text; the rest, cut just after the template's EOS (or
with EOS appended when the template writes none), is the *completion*. The two parts are
tokenized separately and concatenated, so the boundary is exact whatever the tokenizer's
merges: labels are -100 on the prompt (image tokens, template, earlier turns) and on padding,
and the token ids on the completion, i.e. exactly A*_{k+1} + EOS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from training.data.version import DatasetVersion, DatasetVersionError, record_image_bytes
from training.stage2.prompts import critique_prompt, revision_prompt

IGNORE_INDEX = -100  # what transformers' cross-entropy skips
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One supervised row: the user prompt, the target answer, the image bytes (or None)."""

    id: str
    prompt: str
    target: str
    image: bytes | None
    group: str = ""  # the trajectory: held-out splits keep a trajectory's steps together


def _field(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetVersionError(f"{where}: field {key!r} is missing or empty")
    return value.strip()


def sft_examples(version: DatasetVersion, *, with_image: bool = True) -> Iterator[Example]:
    """Examples of ``stage2/sft.jsonl``: Prompt(Q, A_k, F_k) -> A*_{k+1} (Eq. 7)."""
    for n, row in enumerate(version.stage2("sft"), start=1):
        where = f"{version.root}/stage2/sft.jsonl row {n}"
        prompt = revision_prompt(
            _field(row, "question", where),
            _field(row, "response", where),
            _field(row, "feedback", where),
        )
        image = record_image_bytes(version, row, where=where) if with_image else None
        group = str(row.get("trajectory", row.get("id", n)))
        yield Example(str(row.get("id", n)), prompt, _field(row, "target", where), image, group)


def rm_examples(version: DatasetVersion, *, with_image: bool = False) -> Iterator[Example]:
    """Examples of ``stage2/rm.jsonl``: critique_prompt(Q, A_k, evidence) -> F_k."""
    for n, row in enumerate(version.stage2("rm"), start=1):
        where = f"{version.root}/stage2/rm.jsonl row {n}"
        prompt = critique_prompt(
            _field(row, "question", where),
            _field(row, "response", where),
            str(row.get("evidence") or ""),
        )
        image = record_image_bytes(version, row, where=where) if with_image else None
        group = str(row.get("trajectory", row.get("id", n)))
        yield Example(str(row.get("id", n)), prompt, _field(row, "feedback", where), image, group)


def split_holdout(examples: list[Example], fraction: float) -> tuple[list[Example], list]:
    """``(train, held out)``: whole trajectories go to the held-out side by a stable hash of
    their id (the same on every rank and every run)."""
    from training.data.layout import key_in_holdout

    held = [e for e in examples if key_in_holdout(e.group or e.id, fraction)]
    kept = [e for e in examples if not key_in_holdout(e.group or e.id, fraction)]
    return kept, held


def _messages(example: Example, vision: bool) -> tuple[list[dict], dict]:
    """The user turn and the assistant turn, in the content shape the model's template takes:
    typed parts for vision processors, plain strings for text tokenizers."""
    if not vision:
        return (
            [{"role": "user", "content": example.prompt}],
            {"role": "assistant", "content": example.target},
        )
    parts: list[dict[str, Any]] = [{"type": "text", "text": example.prompt}]
    if example.image is not None:
        parts.insert(0, {"type": "image"})
    return (
        [{"role": "user", "content": parts}],
        {"role": "assistant", "content": [{"type": "text", "text": example.target}]},
    )


def split_prompt_completion(processor: Any, example: Example, vision: bool) -> tuple[str, str]:
    """``(prompt text, completion text)`` of one example through the model's chat template
    (see the module docstring); the completion ends with the tokenizer's EOS token."""
    tokenizer = getattr(processor, "tokenizer", processor)
    eos = tokenizer.eos_token
    # A vision processor's template wants typed parts even when this row sends no image.
    user, assistant = _messages(example, vision or hasattr(processor, "image_processor"))
    if not getattr(processor, "chat_template", None) and not getattr(
        tokenizer, "chat_template", None
    ):
        image_token = getattr(processor, "image_token", "<image>")
        prompt = f"{image_token}\n{example.prompt}\n" if example.image else f"{example.prompt}\n"
        return prompt, example.target + eos
    prompt = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template([*user, assistant], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            f"row {example.id}: the chat template's generation prompt is not a prefix of the "
            "rendered conversation, so the answer tokens cannot be separated"
        )
    completion = full[len(prompt) :]
    at = completion.rfind(eos) if eos else -1
    if at < 0:  # the template writes no EOS (LLaVA-1.5's): the model must still learn to stop
        return prompt, completion.rstrip() + eos
    return prompt, completion[: at + len(eos)]  # drop template text after the answer's EOS


class SupervisedDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Encoded examples: ``input_ids``, ``labels`` (-100 outside the completion) and, for
    vision models, ``pixel_values``. Encoding happens on access so images stay compressed in
    memory until used."""

    def __init__(
        self, examples: list[Example], processor: Any, *, vision: bool, max_length: int
    ) -> None:
        self.examples = examples
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.vision = vision
        self.max_length = max_length
        self.truncated = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        prompt, completion = split_prompt_completion(self.processor, example, self.vision)
        # Template text carries BOS already; the tokenizer must not add special tokens again.
        if self.vision and example.image is not None:
            from training.data.version import open_image

            encoded = self.processor(
                images=[open_image(example.image)],
                text=[prompt],
                return_tensors="pt",
                add_special_tokens=False,
            )
            prompt_ids = encoded["input_ids"][0]
            pixel_values = encoded["pixel_values"][0]
        else:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")[
                "input_ids"
            ][0]
            pixel_values = None
        completion_ids = self.tokenizer(completion, add_special_tokens=False, return_tensors="pt")[
            "input_ids"
        ][0]
        room = self.max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"row {example.id}: the prompt alone has {len(prompt_ids)} tokens, more than "
                f"max_length={self.max_length}"
            )
        if len(completion_ids) > room:
            # Cut the target, never the prompt: image tokens must match the image features.
            self.truncated += 1
            log.warning("row %s: target cut to %d tokens (max_length)", example.id, room)
            completion_ids = completion_ids[:room]
        item = {
            "input_ids": torch.cat([prompt_ids, completion_ids]),
            "labels": torch.cat(
                [torch.full_like(prompt_ids, IGNORE_INDEX), completion_ids.clone()]
            ),
        }
        if pixel_values is not None:
            item["pixel_values"] = pixel_values
        return item


@dataclass
class SupervisedCollator:
    """Right-pads a list of dataset items into a batch; padding is masked out of attention and
    of the loss."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        batch_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch_ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            attention[row, :n] = 1
        batch = {"input_ids": batch_ids, "attention_mask": attention, "labels": labels}
        if "pixel_values" in items[0]:
            batch["pixel_values"] = torch.stack([item["pixel_values"] for item in items])
        return batch


def pad_token_id(processor: Any) -> int:
    """The id padding uses: the tokenizer's pad token, else its EOS (Llama has no pad)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)
