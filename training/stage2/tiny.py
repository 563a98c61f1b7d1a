"""Tiny random Stage-2 models with an offline tokenizer, for tests, benchmarks and CPU trials.

- ``build_tiny_llava(folder)``: a ``LlavaForConditionalGeneration`` (tiny CLIP vision tower +
  tiny Llama) with a ``LlavaProcessor``; it loads with ``AutoModelForImageTextToText`` /
  ``AutoProcessor`` exactly as ``llava-hf/llava-1.5-7b-hf`` does, so it stands in for M.
- ``build_tiny_text_lm(folder)``: a ``LlamaForCausalLM`` with the same kind of tokenizer and a
  chat template, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``: a text-only RM.

The tokenizer is a byte-level BPE trained by the ``tokenizers`` library on a small built-in
corpus (the Stage-2 prompt words and the synthetic shapes' vocabulary). Byte-level means any
text round-trips exactly through encode/decode, which the label-masking tests rely on.
``<image>`` is one special token. The chat template wraps the assistant turn in
``{% generation %}`` so ``apply_chat_template(..., return_assistant_tokens_mask=True)`` works.

``python -m training tiny-llava --out DIR`` writes ``DIR/llava`` and ``DIR/rm``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.data.synthetic import COLOURS, SHAPES
from training.formats import STOP_PHRASE
from training.geometry import RELATIONS
from training.stage2.prompts import CRITIQUE_INSTRUCTIONS

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = [PAD, BOS, EOS, UNK, IMAGE]

# LLaVA-1.5's conversation shape ("USER: <image>\n... ASSISTANT: ...</s>"), with a newline
# after "ASSISTANT:" so the generation prompt is a token prefix of the full conversation (a
# trailing space would be merged into the answer's first token by byte-level BPE). Newlines are
# written as {{ '\\n' }} because transformers renders templates with trim_blocks=True.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}{{ '\\n' }}"
    "{% elif message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}ASSISTANT:{{ '\\n' }}"
    "{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{{ '\\n' }}{% endif %}"
)


def default_corpus() -> list[str]:
    """Sentences with the words the synthetic Stage-2 rows and the prompts use."""
    objects = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    lines = [
        CRITIQUE_INSTRUCTIONS,
        STOP_PHRASE,
        "USER: ASSISTANT: User: Assistant: Feedback: Assistant (Revised):",
        "Question: Answer: Evidence (regions of the image: phrase [x0, y0, x1, y1]: caption)",
        "The position is wrong. The colour is wrong. There is no such object.",
        "Where is the What colour is the How many are there? Is there a",
        "0 1 2 3 4 5 6 7 8 9 10 12 16 20 24 32 40 48 56 64 [ ] , . ? :",
    ]
    for obj in objects:
        lines.append(f"{obj} at [8, 16, 40, 56]. The {obj} is at the centre.")
    for a, b in zip(objects, reversed(objects), strict=True):
        lines.extend(f"{a} {r} {b}" for r in RELATIONS)
    return lines


def build_tokenizer(corpus: Iterable[str] | None = None, *, vocab_size: int = 600) -> object:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<image>`` as one special token and
    the chat template above; built offline, deterministic for a given corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus or default_corpus()), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=2048,
        padding_side="left",  # decoder-only generation pads on the left
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(tokenizer: object, *, hidden: int, layers: int) -> dict:
    return {
        "vocab_size": len(tokenizer),  # type: ignore[arg-type]
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,  # type: ignore[attr-defined]
        "bos_token_id": tokenizer.bos_token_id,  # type: ignore[attr-defined]
        "eos_token_id": tokenizer.eos_token_id,  # type: ignore[attr-defined]
        "tie_word_embeddings": False,
    }


def _generation_config(tokenizer: Any, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
    )


def build_tiny_llava(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random LLaVA (model, processor, tokenizer, chat template) and return the
    folder. ``(image_size / patch_size)**2`` image tokens stand for each image (16 by default).
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": hidden,
        },
        text_config={"model_type": "llama", **_llama_config(tokenizer, hidden=hidden, layers=2)},
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),  # type: ignore[attr-defined,call-arg]
        vision_feature_select_strategy="default",  # drops CLS: patches features per image
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer, 24)
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token "default" drops (NOTES-ML)
        chat_template=CHAT_TEMPLATE,
    )
    assert patches > 0
    processor.save_pretrained(folder)
    return folder


def build_tiny_text_lm(
    folder: str | Path, *, hidden: int = 64, layers: int = 2, seed: int = 1
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` with the same style of tokenizer and chat
    template (a text-only rectification module) and return the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**_llama_config(tokenizer, hidden=hidden, layers=layers)))
    model.generation_config = _generation_config(tokenizer, 24)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training tiny-llava", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder; writes OUT/llava and OUT/rm")
    parser.add_argument("--image-size", type=int, default=32, help="vision tower input side")
    parser.add_argument("--hidden", type=int, default=64, help="width of both models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    llava = build_tiny_llava(
        out / "llava", image_size=args.image_size, hidden=args.hidden, seed=args.seed
    )
    rm = build_tiny_text_lm(out / "rm", hidden=args.hidden, seed=args.seed + 1)
    print(llava)
    print(rm)
    return 0
