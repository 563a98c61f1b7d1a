"""``python -m training swap-tower --model M --vision-tower STAGE1 --out RUN``: M with a
Stage-1 CLIP vision tower in place of its own, nothing else changed, saved as ``RUN/final``.

This is how a study scores the arm without Stage-2 (Table 2, "w/o Stage-2"): SFT cannot run
zero steps, and the swap is SFT's own ``replace_vision_tower`` (same checks: every tensor by
name and shape), so the tower in this checkpoint is exactly the one a Stage-2 arm starts from.

Written into ``RUN``: ``final/`` (full weights + processor, loadable with ``from_pretrained``;
written to ``final.tmp`` and renamed, so a ``final/`` is always whole), ``config.json`` (the
two inputs) and ``metrics.jsonl`` (one line: step 0, the tower's parameter count), so a job
page that follows ``metrics.jsonl`` sees the run like any other. An existing ``final/`` is kept
(a restart does nothing). A LoRA adapter as M is merged first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import ConfigError


def swap_tower(model: str, vision_tower: str, out: str | Path) -> dict[str, Any]:
    """Write ``out/final``: ``model`` with the Stage-1 tower of ``vision_tower``."""
    import torch

    from training.stage2.local import load_model_and_processor
    from training.stage2.sft import replace_vision_tower, stage1_vision_folder

    out = Path(out)
    final, tmp = out / "final", out / "final.tmp"
    summary: dict[str, Any] = {"model": model, "vision_tower": vision_tower, "final": str(final)}
    if (final / "config.json").is_file():
        return {**summary, "skipped": "final/ exists"}
    started = time.perf_counter()
    folder = stage1_vision_folder(vision_tower)  # fails in seconds on a wrong folder
    loaded, processor, vision = load_model_and_processor(
        model, device=torch.device("cpu"), dtype=torch.float32
    )
    if not vision:
        raise ConfigError(f"--model {model!r} is text-only: there is no vision tower to swap")
    replace_vision_tower(loaded, folder)
    tower = loaded.model.vision_tower if hasattr(loaded, "model") else loaded.vision_tower
    parameters = sum(p.numel() for p in tower.parameters())
    out.mkdir(parents=True, exist_ok=True)
    config = {"kind": "tower", "model": model, "vision_tower": str(vision_tower)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    line = {"step": 0, "tower_parameters": parameters}
    (out / "metrics.jsonl").write_text(json.dumps(line) + "\n", "utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    loaded.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(final)
    return {**summary, "tower_parameters": parameters,
            "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training swap-tower",
        description="Put a Stage-1 CLIP vision tower into M and save it (no training).",
    )
    p.add_argument("--model", required=True, help="M: a model id, folder or adapter folder")
    p.add_argument(
        "--vision-tower", required=True, help="a Stage-1 run, its final/ or any CLIP folder"
    )
    p.add_argument("--out", required=True, help="run folder (final/, config.json)")
    args = p.parse_args(argv)
    try:
        result = swap_tower(args.model, args.vision_tower, args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
