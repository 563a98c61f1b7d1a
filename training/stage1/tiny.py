"""A tiny random CLIPModel with a BPE tokenizer trained offline, for tests and CPU benchmarks.

``python -m training tiny-clip --out DIR`` writes one that ``model=DIR`` loads like a hub id.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.data.synthetic import COLOURS, SHAPES
from training.geometry import RELATIONS

SPECIALS = ["<pad>", "<|startoftext|>", "<unk>", "<|endoftext|>"]  # EOS id 3, never 2 (NOTES-ML)


def default_corpus() -> list[str]:
    words = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    return words + [
        f"{a} {r} {b}" for a, b in zip(words, reversed(words), strict=True) for r in RELATIONS
    ]


def make_tiny_clip(
    out: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    image_size: int = 64,
    patch_size: int = 8,
    width: int = 64,
    layers: int = 2,
    projection_dim: int = 64,
    seed: int = 0,
) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS)
    bpe.train_from_iterator(list(corpus or default_corpus()), trainer=trainer)
    bos, eos = bpe.token_to_id("<|startoftext|>"), bpe.token_to_id("<|endoftext|>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=32,
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": bpe.get_vocab_size(),
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training tiny-clip", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", required=True, help="folder for the model, tokenizer and processor"
    )
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    print(make_tiny_clip(args.out, image_size=args.image_size))
    return 0
