"""Grounding DINO throughput on a GPU at the real grounding-dino-tiny size, no weights needed.

    .venv/bin/python -m tests.bench.gpu_detector            # on the GPU machine, ~2-4 min
    .venv/bin/python -m tests.bench.gpu_detector --smoke    # CPU check that the script runs

Builds ``GroundingDinoForObjectDetection`` random-initialised from the configuration of
``IDEA-Research/grounding-dino-tiny`` written out below (same parameter count and FLOPs as
the released model; nothing is downloaded, the machine has no network), and times the forward
pass on 800x1066 inputs (a 4:3 image after the processor's 800/1333 resize) with a
20-phrase prompt of 64 tokens, at batch 1, 8 and 32 in float32 and bfloat16. Also times the
checkpoint's default image processor (PIL backend, CPU) per 1024x768 image, since on a GPU
preprocessing can become the bottleneck. Prints one JSON line per measurement and a table.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from transformers import (
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    SwinConfig,
)


def grounding_dino_tiny_config() -> GroundingDinoConfig:
    """The configuration of IDEA-Research/grounding-dino-tiny (its config.json), spelled out."""
    backbone = SwinConfig(  # Swin-T
        image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4.0,
        drop_path_rate=0.1,
        hidden_act="gelu",
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    text = BertConfig(  # bert-base-uncased
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=256,
        num_queries=900,
        encoder_layers=6,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_n_points=4,
        decoder_n_points=4,
        num_feature_levels=4,
        two_stage=True,
        max_text_len=256,
        query_dim=4,
        decoder_bbox_embed_share=True,
        two_stage_bbox_embed_share=False,
        embedding_init_target=True,
        positional_embedding_temperature=20,
        activation_function="relu",
        fusion_droppath=0.1,
        text_enhancer_dropout=0.0,
        init_std=0.02,
        layer_norm_eps=1e-5,
    )


def prompt_ids(phrases: int, tokens_per_phrase: int = 2) -> torch.Tensor:
    """``[CLS] w w . w w . ... [SEP]`` with arbitrary word ids: the shape of a real prompt."""
    ids = [101]
    for i in range(phrases):
        ids += [2000 + 7 * i + j for j in range(tokens_per_phrase)] + [1012]
    return torch.tensor([[*ids, 102]])


def time_forward(model, batch: int, height: int, width: int, ids: torch.Tensor, reps: int):
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pixels = torch.randn(batch, 3, height, width, device=device, dtype=dtype)
    mask = torch.ones(batch, height, width, dtype=torch.long, device=device)
    input_ids = ids.expand(batch, -1).to(device)
    inputs = {
        "pixel_values": pixels,
        "pixel_mask": mask,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        model(**inputs)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            model(**inputs)
        sync()
    seconds = (time.perf_counter() - start) / reps
    return batch / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, to test")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    height, width = (320, 416) if args.smoke else (800, 1066)  # smoke: >900 tokens
    batches = [1] if args.smoke else [int(b) for b in args.batches.split(",")]
    reps = 1 if args.smoke else args.reps
    ids = prompt_ids(20)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, input {width}x{height}, "
        f"prompt {ids.shape[1]} tokens"
    )

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8))
    processor = GroundingDinoImageProcessor()
    processor(images=[image], return_tensors="pt")
    start = time.perf_counter()
    for _ in range(3):
        processor(images=[image], return_tensors="pt")
    pre_ms = (time.perf_counter() - start) / 3 * 1000
    print(json.dumps({"measure": "preprocess_ms_per_image_cpu", "value": round(pre_ms, 1)}))

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(grounding_dino_tiny_config()).eval()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"measure": "parameters_millions", "value": round(params / 1e6, 1)}))
    table = []
    for dtype in args.dtypes.split(","):
        model.to(device=device, dtype=getattr(torch, dtype))
        for batch in batches:
            try:
                rate = time_forward(model, batch, height, width, ids, reps)
            except torch.OutOfMemoryError:
                rate = float("nan")
                torch.cuda.empty_cache()
            row = {"dtype": dtype, "batch": batch, "images_per_s": round(rate, 2)}
            if device == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                torch.cuda.reset_peak_memory_stats()
            print(json.dumps(row), flush=True)
            table.append(row)
    print(f"{'dtype':>9} {'batch':>5} {'img/s':>8}")
    for row in table:
        print(f"{row['dtype']:>9} {row['batch']:>5} {row['images_per_s']:>8.2f}")


if __name__ == "__main__":
    main()
