"""Label masking: the loss sees exactly A*_{k+1} + EOS, nothing of image, prompt or padding."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.data.version import DatasetVersion, DatasetVersionError
from training.formats import STOP_PHRASE
from training.stage2.data import (
    IGNORE_INDEX,
    Example,
    SupervisedCollator,
    SupervisedDataset,
    pad_token_id,
    rm_examples,
    sft_examples,
    split_prompt_completion,
)
from training.stage2.prompts import critique_prompt, revision_prompt

# llava-hf/llava-1.5-7b-hf's own chat template: no {% generation %}, a space after each text.
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


EXAMPLES = [
    Example(
        "a",
        revision_prompt("Where is the red circle?", "At the centre.", "The position is wrong."),
        "A red circle at [8, 16, 40, 56].",
        png((220, 30, 30), (64, 64)),
    ),
    Example(
        "b",
        revision_prompt(
            "What colour is the square on the left of the picture, next to the triangle?",
            "The square is green and it is on the right.",
            "The square is blue, and it is left of the triangle.",
        ),
        "Blue.",
        png((30, 60, 220), (80, 48)),
    ),
    Example(
        "c",
        revision_prompt("How many?", "Two.", "There are three shapes: count again."),
        "There are three shapes: a red square, a blue circle and a cyan triangle.",
        png((30, 210, 220), (40, 72)),
    ),
]


@pytest.fixture(scope="module")
def processor(tiny_llava_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_llava_dir)


def batch_of(processor, examples: list[Example], vision: bool = True) -> dict[str, torch.Tensor]:
    dataset = SupervisedDataset(examples, processor, vision=vision, max_length=1024)
    return SupervisedCollator(pad_token_id(processor))([dataset[i] for i in range(len(dataset))])


def test_supervised_tokens_decode_to_exactly_the_target_and_eos(processor) -> None:
    batch = batch_of(processor, EXAMPLES)
    tokenizer = processor.tokenizer
    assert batch["input_ids"].shape[0] == 3
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    for row, example in enumerate(EXAMPLES):
        supervised = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(supervised) == example.target + tokenizer.eos_token
        # where a label counts it is the input token itself (the model shifts them)
        kept = batch["labels"][row] != IGNORE_INDEX
        assert torch.equal(batch["labels"][row][kept], batch["input_ids"][row][kept])


def test_image_prompt_and_padding_are_masked(processor, tiny_llava_dir: Path) -> None:
    from transformers import AutoConfig

    image_token = AutoConfig.from_pretrained(tiny_llava_dir).image_token_id
    batch = batch_of(processor, EXAMPLES)
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max()  # varied lengths: some rows carry padding
    for row in range(3):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        assert int((ids == image_token).sum()) == 16
        assert (labels[ids == image_token] == IGNORE_INDEX).all()
        assert (labels[batch["attention_mask"][row] == 0] == IGNORE_INDEX).all()
        # the supervised span is one block at the very end of the real tokens
        positions = (labels != IGNORE_INDEX).nonzero().flatten()
        assert positions.tolist() == list(range(int(positions[0]), int(lengths[row])))
        prompt = processor.tokenizer.decode(ids[: int(positions[0])])
        assert EXAMPLES[row].prompt in prompt and EXAMPLES[row].target not in prompt


def test_the_template_marks_agree_with_our_split(tiny_rm_dir: Path) -> None:
    """The chat template's own {% generation %} mask selects the same answer tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    example = Example(
        "r", critique_prompt("Q?", "It is red.", "cup [0, 0, 4, 4]"), STOP_PHRASE, None
    )
    item = SupervisedDataset([example], tokenizer, vision=False, max_length=512)[0]
    marked = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": example.prompt},
            {"role": "assistant", "content": STOP_PHRASE},
        ],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    by_template = [
        t for t, m in zip(marked["input_ids"], marked["assistant_masks"], strict=True) if m
    ]
    assert item["input_ids"][item["labels"] != IGNORE_INDEX].tolist() == by_template


def test_a_template_without_generation_marks_still_splits(processor) -> None:
    """LLaVA-1.5's real template: the answer follows 'ASSISTANT:' and EOS is appended."""
    from transformers import AutoProcessor

    real = AutoProcessor.from_pretrained(processor.tokenizer.name_or_path)
    real.chat_template = LLAVA_15_TEMPLATE
    prompt, completion = split_prompt_completion(real, EXAMPLES[0], vision=True)
    assert prompt.endswith("ASSISTANT:") and "<image>" in prompt
    assert completion == " " + EXAMPLES[0].target + real.tokenizer.eos_token


def test_a_too_long_target_is_cut_never_the_prompt(processor) -> None:
    dataset = SupervisedDataset(EXAMPLES[2:], processor, vision=True, max_length=90)
    item = dataset[0]
    assert len(item["input_ids"]) == 90 and dataset.truncated == 1
    assert (item["labels"] != IGNORE_INDEX).sum() >= 1


def test_sft_and_rm_rows_become_examples(stage2_version_dir: Path) -> None:
    version = DatasetVersion.open(stage2_version_dir)
    sft = list(sft_examples(version))
    rm = list(rm_examples(version))
    assert len(sft) == 9 and len(rm) == 18
    row = next(version.stage2("sft"))
    assert sft[0].prompt == revision_prompt(row["question"], row["response"], row["feedback"])
    assert sft[0].target == row["target"] and sft[0].image[:4] == b"\x89PNG"
    assert sum(e.target == STOP_PHRASE for e in rm) == 9
    assert all(e.image is None for e in rm)  # a text RM by default


def test_a_row_with_a_missing_field_is_named(tmp_path: Path, stage2_version_dir: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(stage2_version_dir, copy)
    path = copy / "stage2" / "sft.jsonl"
    rows = [json.loads(line) for line in path.open()]
    del rows[1]["target"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = DatasetVersion.open(copy, verify=False)
    with pytest.raises(DatasetVersionError, match=r"sft.jsonl row 2: field 'target'"):
        list(sft_examples(version))
