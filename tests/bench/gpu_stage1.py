"""Stage-1 throughput at the real size, for a GPU machine: ``python -m tests.bench.gpu_stage1``.

Builds a random-initialised CLIP ViT-L/14-336 (the LLaVA-1.5 vision tower; no weights needed),
runs bf16 training steps of the real model and losses at increasing batch size until memory
runs out, and prints images/s, regions/s and an MFU estimate:
FLOPs per step (analytic, 3x forward) / (step time x 989e12, H100 bf16 dense peak).
Not run in CI; prepared for a lent GPU.
"""

from __future__ import annotations

import json
import time

import torch

from training.stage1.batching import Stage1Batch, same_image_pairs
from training.stage1.losses import Stage1Loss
from training.stage1.model import RegionCLIP

PEAK = 989e12
REGIONS = 20
TEXT_LEN = 32


def vit_l_336():
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
        },
        projection_dim=768,
    )
    return CLIPModel(config), config


def transformer_flops(tokens: int, width: int, mlp: int, layers: int) -> float:
    """Forward FLOPs of one sequence: 2 x params-matmul per token + attention scores/values."""
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width
    return layers * per_layer


def step_flops(batch: int, texts: int) -> float:
    vision = transformer_flops(577, 1024, 4096, 24)
    text = transformer_flops(TEXT_LEN, 768, 3072, 12)
    return 3 * (batch * vision + texts * text)  # forward + backward (2x)


def fake_batch(n: int, device: torch.device) -> Stage1Batch:
    r = n * REGIONS
    texts = n + r
    xy = torch.rand(r, 2) * 0.7
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(r, 2) * 0.25], dim=1).clamp(max=1)
    region_image = torch.arange(n).repeat_interleave(REGIONS)
    pairs = same_image_pairs(region_image)
    return Stage1Batch(
        pixel_values=torch.randn(n, 3, 336, 336),
        input_ids=torch.randint(0, 49000, (texts, TEXT_LEN)),
        attention_mask=torch.ones(texts, TEXT_LEN, dtype=torch.long),
        text_ids=torch.arange(texts),
        caption_index=torch.arange(n),
        region_caption_index=n + torch.arange(r),
        region_image=region_image,
        region_slot=torch.arange(r) % REGIONS,
        boxes=boxes,
        pairs=pairs,
        relation_labels=torch.randint(0, 7, (pairs.shape[0],)),
        texts=[],
    ).to(device)


def run(batch: int, model, loss_fn, optimizer, device, steps: int = 6) -> float:
    data = fake_batch(batch, device)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(
                data.pixel_values,
                data.input_ids,
                data.attention_mask,
                data.boxes,
                data.region_image,
                data.region_slot,
                data.pairs,
            )
        loss_fn(out, data)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    clip, _ = vit_l_336()
    model = RegionCLIP(clip).to(device)
    loss_fn = Stage1Loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    best = None
    for batch in (8, 16, 32, 64, 96, 128, 192, 256):
        try:
            seconds = run(batch, model, loss_fn, optimizer, device)
        except torch.OutOfMemoryError:
            print(json.dumps({"batch": batch, "oom": True}))
            break
        texts = batch * (REGIONS + 1)
        line = {
            "batch": batch,
            "regions": batch * REGIONS,
            "step_s": seconds,
            "images_per_s": batch / seconds,
            "regions_per_s": batch * REGIONS / seconds,
            "mfu": step_flops(batch, texts) / (seconds * PEAK),
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
        print(json.dumps(line), flush=True)
        best = line
        torch.cuda.empty_cache()
    print(json.dumps({"device": torch.cuda.get_device_name(), "largest_fitting": best}))


if __name__ == "__main__":
    main()
