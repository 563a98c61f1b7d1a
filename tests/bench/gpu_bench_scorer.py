"""Scorer throughput on one GPU: a random-weight LLaVA-1.5-7B in bf16 on 3,000 probes.

    python -m tests.bench.gpu_bench_scorer [--probes 3000] [--images 500] [--batch-size 32]
        [--max-new-tokens 8] [--device cuda] [--tiny]

The model is LLaVA-1.5-7B's configuration (CLIP ViT-L/14-336 + Llama-2-7B, 576 image tokens;
``tests.bench.gpu_stage2.llava_7b_config``), built from the config directly on the device in
bf16, random-initialised: nothing is downloaded and nothing is saved (14 GB would cost more
time than the scoring). Its processor is a real ``LlavaProcessor`` (CLIP image processor at
336 px, the tiny LLaVA's offline tokenizer and chat template; random weights do not care
which ids the words get). The probe set is written through ``ProbeSetWriter``: ``--probes``
POPE questions over ``--images`` 640x480 noise JPEGs (COCO-sized decode work).

It is scored by the same code as ``python -m training bench`` (``LocalScorer`` +
``run_bench``: batched left-padded greedy ``generate``, image bytes read ahead in a thread,
``predictions.jsonl`` and ``metrics.json`` written), after one warm-up batch. Random weights
almost never emit EOS, so every answer decodes ``--max-new-tokens`` tokens: a worst case for
POPE, where real answers stop after a word or two.

Prints one JSON object: probes/s, the time 9,000 probes would take and whether that meets the
issue's target (at most 10 minutes on one H100-class GPU), peak memory. ``--tiny`` runs the same
path with tiny configs on whatever device is there (a smoke test; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_PROBES, TARGET_S = 9000, 600.0
OBJECTS = ["dog", "cat", "person", "car", "chair", "bottle", "apple", "umbrella", "bus", "cup"]


def write_probes(folder: Path, probes: int, images: int, size: tuple[int, int]) -> Path:
    """``probes`` POPE-style probes, half yes, over ``images`` random-noise JPEGs."""
    import numpy as np
    from PIL import Image

    from tests.training.probes.probe_factory import question
    from training.probes.layout import Probe, ProbeSetWriter

    rng = np.random.default_rng(0)
    splits = ("random", "popular", "adversarial")
    with ProbeSetWriter(folder) as out:
        shas = []
        for _ in range(images):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
            data = buffer.getvalue()
            sha = hashlib.sha256(data).hexdigest()
            out.add_image(sha, data, "jpg")
            shas.append(sha)
        for n in range(probes):
            obj = OBJECTS[n % len(OBJECTS)]
            out.add(
                Probe(
                    id=str(n),
                    image=shas[n % images],
                    question=question(obj),
                    answer="yes" if n % 2 else "no",
                    kind="pope",
                    split=splits[n % 3],
                    object=obj,
                )
            )
        out.finish(
            {"id": "gpu-bench", "kind": "pope", "split": "mixed", "seed": 0}, lmms_eval=False
        )
    return folder


def build_generator(tiny: bool, device: Any, dtype: Any, max_new_tokens: int) -> Any:
    """A ``LocalGenerator`` around a random LLaVA built in memory, with a real processor."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    from tests.bench.gpu_stage2 import build, llava_7b_config
    from training.stage2.local import LocalGenerator
    from training.stage2.tiny import CHAT_TEMPLATE, IMAGE, build_tokenizer

    tokenizer: Any = build_tokenizer()
    config = llava_7b_config(tiny)
    config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)
    model = build(LlavaForConditionalGeneration, config, device, dtype)
    side = config.vision_config.image_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token "default" drops (NOTES-ML)
        chat_template=CHAT_TEMPLATE,
    )
    return LocalGenerator(
        name="random-llava-1.5-7b" + ("-tiny" if tiny else ""),
        model=model,
        processor=processor,
        vision=True,
        max_new_tokens=max_new_tokens,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.gpu_bench_scorer",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--probes", type=int, default=3000, help="probes to score")
    p.add_argument("--images", type=int, default=500, help="distinct images (POPE: 500)")
    p.add_argument("--batch-size", type=int, default=32, help="probes per generate")
    p.add_argument("--max-new-tokens", type=int, default=8, help="tokens each answer decodes")
    p.add_argument("--device", default="", help="default: cuda if present, else cpu")
    p.add_argument("--out", default="", help="keep the probe set and run here (default: temp)")
    p.add_argument("--tiny", action="store_true", help="tiny configs: a smoke test")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import torch

    from training.probes.layout import ProbeSet
    from training.probes.local_scorer import LocalScorer
    from training.probes.scorer import run_bench

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-scorer-") as tmp:
        work = Path(args.out or tmp)
        started = time.perf_counter()
        side = (64, 48) if args.tiny else (640, 480)
        probe_dir = write_probes(work / "probes", args.probes, args.images, side)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        generator = build_generator(args.tiny, device, dtype, args.max_new_tokens)
        build_s = time.perf_counter() - started
        scorer = LocalScorer(generator, batch_size=args.batch_size)
        probe_set = ProbeSet.open(probe_dir)
        probes = list(probe_set.probes())
        settings = {"max_new_tokens": args.max_new_tokens, "limit": None}
        common: dict[str, Any] = {"model": generator.name, "settings": settings}
        run_bench(scorer, probe_set, probes[: args.batch_size], work / "warm-up", **common)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics = run_bench(
            scorer, probe_set, probes, work / "run", progress_every=500, stream=sys.stderr, **common
        )
    rate = metrics["probes_per_s"]
    vision = generator.model.config.vision_config
    projected = TARGET_PROBES / rate
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "tiny": args.tiny,
        "parameters_b": round(sum(p.numel() for p in generator.model.parameters()) / 1e9, 3),
        "image_tokens": (vision.image_size // vision.patch_size) ** 2,
        "probes": metrics["n"],
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "write_probe_set_s": round(write_s, 1),
        "build_model_s": round(build_s, 1),
        "score_s": metrics["elapsed_s"],
        "probes_per_s": rate,
        "projected_9000_probes_s": round(projected, 1),
        "target": f"{TARGET_PROBES} probes in <= {TARGET_S:.0f} s",
        "target_met": projected <= TARGET_S,
        "failed": metrics["failed"],
        "strict_unparsed": metrics["splits"]["all"]["strict"]["unparsed"],
    }
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
