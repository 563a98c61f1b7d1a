"""Stage-2 benchmark on CPU with the tiny random models of the tests.

    .venv/bin/python -m tests.bench.bench_stage2 [--items 8] [--k 2] [--max-new-tokens 16]
        [--sft-steps 20] [--batch-size 4] [--threads N]

1. The rectification loop's latency breakdown: the tiny LLaVA as M and the tiny text Llama as
   the RM, both local (``LocalGenerator``), K revisions per item. The random RM never says the
   stop phrase, so every item runs all K steps: ms per A_0, per RM call, per revision (M) and
   per full step (RM call + revision), median and mean over all calls.
2. The loop's throughput with all items in flight at once: items/s when each local model
   answers every call alone, and when concurrent calls share one batched generate
   (``LocalGenerator(max_batch=N)``, ``rectify --local-batch N``).
3. SFT throughput: ``train_supervised`` on the tiny LLaVA and a synthetic version (full tuning
   and LoRA): optimizer steps/s and samples/s, the first step (load, warm-up) excluded.

The models are built into ``var/bench/stage2`` once. Not collected by pytest; the figures are
for comparing changes on one machine, not absolute speeds (random weights and tiny widths make
M and RM cost almost the same).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.stage2.loop import rectify

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "bench" / "stage2"


def tiny_models() -> tuple[Path, Path]:
    from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm

    llava, rm = CACHE / "llava", CACHE / "rm"
    if not (llava / "model.safetensors").is_file():
        build_tiny_llava(llava)
    if not (rm / "model.safetensors").is_file():
        build_tiny_text_lm(rm)
    return llava, rm


def png(seed: int) -> bytes:
    colour = ((seed * 70) % 256, (seed * 130) % 256, (seed * 200) % 256)
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")
    return out.getvalue()


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(1000 * statistics.median(values), 2),
        "mean_ms": round(1000 * statistics.fmean(values), 2),
        "calls": len(values),
    }


def bench_loop(llava: Path, rm_dir: Path, items: int, k: int, max_new_tokens: int) -> dict:
    from training.stage2.local import LocalGenerator

    m = LocalGenerator.from_pretrained(str(llava), device="cpu", max_new_tokens=max_new_tokens)
    rm = LocalGenerator.from_pretrained(str(rm_dir), device="cpu", max_new_tokens=max_new_tokens)
    m.generate_sync("warm up", image=png(0))
    rm.generate_sync("warm up")
    first, critiques, revisions, steps = [], [], [], []
    outcomes = []

    async def run() -> None:
        for n in range(items):  # one at a time: per-call latency, not throughput
            result = await rectify(
                question=f"Where is the shape number {n}?", m=m, rm=rm, k=k, image=png(n + 1)
            )
            outcomes.append(result.outcome)
            for step in result.steps:
                critiques.append(step.rm_latency_s or 0.0)
                if step.k == 0:
                    first.append(step.m_latency_s or 0.0)
                else:
                    revisions.append(step.m_latency_s or 0.0)
            # a full step k -> k+1: the RM's critique of A_k, then M's revision A_{k+1}
            for before, after in zip(result.steps, result.steps[1:], strict=False):
                steps.append((before.rm_latency_s or 0.0) + (after.m_latency_s or 0.0))

    asyncio.run(run())
    return {
        "items": items,
        "k": k,
        "max_new_tokens": max_new_tokens,
        "accepted": outcomes.count("accepted"),
        "m_answer_A0": ms(first),
        "rm_critique": ms(critiques),
        "m_revision": ms(revisions) if revisions else None,
        "full_step": ms(steps) if steps else None,
    }


def bench_throughput(
    llava: Path, rm_dir: Path, items: int, k: int, max_new_tokens: int, batch: int
) -> dict:
    """Items/s of the loop with ``items`` in flight at once, local models answering up to
    ``batch`` concurrent calls in one batched generate (1: every call alone)."""
    from training.stage2.local import LocalGenerator

    options = {"device": "cpu", "max_new_tokens": max_new_tokens, "max_batch": batch}
    m = LocalGenerator.from_pretrained(str(llava), **options)
    rm = LocalGenerator.from_pretrained(str(rm_dir), **options)
    m.generate_sync("warm up", image=png(0))
    rm.generate_sync("warm up")

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                rectify(question=f"Where is shape {n}?", m=m, rm=rm, k=k, image=png(n + 1))
                for n in range(items)
            )
        )
        return time.perf_counter() - started

    seconds = asyncio.run(run())
    return {"items": items, "k": k, "local_batch": batch, "items_per_s": round(items / seconds, 2)}


def bench_sft(llava: Path, steps: int, batch_size: int, lora: str) -> dict:
    from tests.training.stage2.conftest import write_stage2_version
    from training.data.version import DatasetVersion
    from training.stage2.config import SFTConfig
    from training.stage2.data import sft_examples
    from training.stage2.sft import train_supervised

    with tempfile.TemporaryDirectory() as tmp:
        version = write_stage2_version(Path(tmp) / "v", images=40)
        examples = list(sft_examples(DatasetVersion.open(version)))
        config = SFTConfig(
            model=str(llava),
            max_steps=steps + 1,
            batch_size=batch_size,
            grad_accum=1,
            log_every=1,
            lora=lora,
            device="cpu",
            warmup_steps=0,
        )
        train_supervised(config, examples, Path(tmp) / "run", kind="sft", vision=True)
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").open()]
    timed = lines[1:]  # the first step includes warm-up
    seconds = sum(batch_size / line["samples_per_s"] for line in timed)
    return {
        "lora": lora,
        "batch_size": batch_size,
        "steps": len(timed),
        "steps_per_s": round(len(timed) / seconds, 3),
        "samples_per_s": round(len(timed) * batch_size / seconds, 2),
        "tokens_per_s": round(statistics.fmean(line["tokens_per_s"] for line in timed), 1),
        "first_loss": round(lines[0]["loss"], 4),
        "last_loss": round(lines[-1]["loss"], 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=8, help="items for the loop benchmark")
    parser.add_argument("--k", type=int, default=2, help="revisions per item (K)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="per M or RM call")
    parser.add_argument("--sft-steps", type=int, default=20, help="timed SFT steps")
    parser.add_argument("--batch-size", type=int, default=4, help="SFT rows per step")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    llava, rm = tiny_models()
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads",
        "loop": bench_loop(llava, rm, args.items, args.k, args.max_new_tokens),
    }
    print(json.dumps(report["loop"], indent=2), flush=True)
    report["throughput"] = [
        bench_throughput(llava, rm, args.items, args.k, args.max_new_tokens, batch)
        for batch in (1, args.items)
    ]
    print(json.dumps(report["throughput"], indent=2), flush=True)
    report["sft_full"] = bench_sft(llava, args.sft_steps, args.batch_size, "false")
    print(json.dumps(report["sft_full"], indent=2), flush=True)
    report["sft_lora"] = bench_sft(llava, args.sft_steps, args.batch_size, "true")
    print(json.dumps(report["sft_lora"], indent=2), flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps({"finished": started, "machine": report["machine"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
