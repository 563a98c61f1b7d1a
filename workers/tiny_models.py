"""Tiny random-initialised detector and captioner of the real architectures, built offline: the
worker tests use them, and ``python manage.py make_demo_models`` writes them for the quick start.

Each builder writes a folder with ``save_pretrained`` (model, tokenizer and image processor), so
the code under test loads it through ``from_pretrained`` exactly as it loads real weights.
Builders are deterministic (fixed seed) and skip work when the folder is already complete.

- ``build_tiny_grounding_dino(folder)``: ``GroundingDinoForObjectDetection`` with a Swin of
  embed dim 16 and depths [1, 1, 1, 1], a one-layer BERT of hidden size 32, d_model 32,
  50 queries, 1 encoder and 2 decoder layers; images resized to a shortest edge of 128 px.
- ``build_tiny_blip(folder)``: ``BlipForConditionalGeneration`` (an ``image-text-to-text``
  checkpoint) with a 1-layer ViT and a 1-layer BERT decoder.

No Django here. Both share one WordPiece vocabulary made here. Grounding DINO splits phrases at
the BERT ids 101 ``[CLS]``, 102 ``[SEP]``, 1012 ``.`` and 1029 ``?``, so the vocabulary puts
those tokens at exactly those ids.
"""

from __future__ import annotations

import string
from pathlib import Path

WORDS = tuple(
    " ".join(
        [
            "a an the of in on at with and or to is are this that some two three small large",
            "big red blue green white black brown yellow dog dogs cat cats man men woman women",
            "person people child boy girl car cars bus truck bike bicycle tree trees grass sky",
            "cloud clouds road street house building window door table chair sofa bed cup",
            "bottle plate bowl food pizza cake apple banana orange ball kite frisbee phone",
            "laptop book clock sign light pole fence water river sea beach boat bird birds horse",
            "cow sheep elephant giraffe zebra bear hat shirt jacket dress shoe shoes bag",
            "umbrella picture wall floor field mountain hill snow left right top bottom front",
            "behind next near photo sitting standing holding wearing",
        ]
    ).split()
)

SPECIAL_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
PUNCT_IDS = {1012: ".", 1029: "?"}
LOGIT_SHRINK = 0.15
GDINO_IMAGE_SIZE = {"shortest_edge": 128, "longest_edge": 200}


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary with BERT's special and separator tokens at BERT's ids.

    Every lowercase ASCII word tokenizes without ``[UNK]``: single letters and digits exist both
    as word starts and as ``##`` continuations.
    """
    filler = iter(f"[unused{i}]" for i in range(2000))
    others = [c for c in string.punctuation if c not in ".?"]
    pieces = (
        others
        + list(string.ascii_lowercase + string.digits)
        + ["##" + c for c in string.ascii_lowercase + string.digits]
        + list(WORDS)
        + ["##s", "##es", "##ing", "##ed"]
    )
    fixed = {**SPECIAL_IDS, **PUNCT_IDS}
    vocab: list[str] = []
    queue = iter(dict.fromkeys(pieces))  # "a" is a letter and a word: keep it once
    for i in range(max(fixed) + 1):
        if i in fixed:
            vocab.append(fixed[i])
        elif 104 <= i < 1012 or 1013 <= i < 1029:
            vocab.append(next(queue, None) or next(filler))
        else:
            vocab.append(next(filler))
    vocab.extend(queue)  # whatever did not fit before id 1029
    return vocab


def tiny_tokenizer():
    """A ``BertTokenizer`` over ``tiny_vocab()``, made in memory."""
    from transformers import BertTokenizer

    vocab = {token: i for i, token in enumerate(tiny_vocab())}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == [101, 102, 1012, 1029]
    return tokenizer


def tiny_grounding_dino_config(vocab_size: int):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(  # type: ignore[call-arg]  # out_* are properties with setters
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=7,
        out_indices=[2, 3, 4],
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        num_queries=50,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_feature_levels=4,
        max_text_len=256,
    )


def build_tiny_grounding_dino(folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Grounding DINO with its processor into ``folder``; return it."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "processor_config.json").exists():
        return folder
    import torch
    from transformers import (
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(tiny_grounding_dino_config(len(tokenizer))).eval()
    with torch.no_grad():
        # Random weights give token logits of +-10, so every score is ~0 or ~1. Shrinking the
        # decoder's last layer norm spreads scores over (0, 1), which threshold tests need.
        model.model.decoder.layer_norm.weight.mul_(LOGIT_SHRINK)
        model.model.decoder.layer_norm.bias.mul_(LOGIT_SHRINK)
    image_processor = GroundingDinoImageProcessor(size=GDINO_IMAGE_SIZE)
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_blip(folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny random BLIP captioner (``AutoModelForImageTextToText``) into ``folder``."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "processor_config.json").exists():
        return folder
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    config = BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
