"""``python -m training hybrid``: Stage-2 SFT then RL in one job (preprint §4.5), and the
presets that reproduce the Figure 2 comparison (``hybrid``, ``sft_only``, ``rl_only``).

``python -m training hybrid --data VERSION_DIR --out RUN_DIR [preset=...] [key=value ...]
[sft.key=value ...] [rl.key=value ...]``

SFT (``training.stage2.sft``) runs into ``RUN_DIR/sft``, then RL (``training.stage2.rl``) from
``RUN_DIR/sft/final`` into ``RUN_DIR``. One ``metrics.jsonl`` holds both phases (the SFT lines,
followed live while SFT runs, then RL lines continuing the step count with ``"phase": "rl"``);
``RUN_DIR/final`` holds the last phase's weights; ``RUN_DIR/config.json`` both resolved configs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import ConfigError, command_parser, help_text, resolve_args
from training.models_available import check_model
from training.stage2.config import HYBRID_PRESETS, HybridConfig, RLConfig, SFTConfig
from training.stage2.rl import is_main_process, pin_cuda_device, train_rl


def _sft_done(folder: Path) -> bool:
    final = folder / "final"
    return (final / "config.json").is_file() or (final / "adapter_config.json").is_file()


def _last_step(metrics: Path) -> int:
    lines = [ln for ln in metrics.read_text("utf-8").splitlines() if ln.strip()]
    return int(json.loads(lines[-1])["step"]) if lines else 0


def _follow_sft_metrics(out: Path) -> None:
    """Point ``out/metrics.jsonl`` at the SFT phase's file while it runs, so the job page
    draws the SFT curve live; ``_keep_sft_metrics`` turns it into a real file afterwards."""
    link = out / "metrics.jsonl"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("sft") / "metrics.jsonl")


def _keep_sft_metrics(out: Path) -> None:
    """Replace the link by a copy of the SFT lines (byte-identical, so a reader that followed
    the link keeps its offset); the RL phase appends to it."""
    link = out / "metrics.jsonl"
    if link.is_file() and not link.is_symlink():
        return
    tmp = out / "metrics.jsonl.tmp"
    shutil.copyfile(out / "sft" / "metrics.jsonl", tmp)
    tmp.replace(link)


def _link_final(source: Path, target: Path) -> None:
    """``target`` as a hard-linked copy of ``source`` (no second copy of the weights)."""
    import os

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.link)


def run_hybrid(config: HybridConfig, data: str | Path, out: str | Path) -> dict[str, Any]:
    """Run the preset's phases into ``out``: SFT into ``out/sft`` (skipped when a previous
    attempt finished it), then RL from ``out/sft/final`` into ``out``; one ``metrics.jsonl``
    for both (RL steps continue SFT's), ``final/`` the last phase's weights."""
    from training.data.version import DatasetVersion
    from training.stage2 import data as sft_data
    from training.stage2.sft import train_supervised

    preset, sft_config, rl_config = config.preset, config.sft, config.rl
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    phases = HYBRID_PRESETS[preset]
    resolved = {
        "preset": preset,
        "phases": list(phases),
        "sft": dataclasses.asdict(sft_config) if "sft" in phases else None,
        "rl": dataclasses.asdict(rl_config) if rl_config is not None else None,
    }
    main = is_main_process()
    if main:
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n", "utf-8")
    summary: dict[str, Any] = {"preset": preset}
    offset = 0
    if "sft" in phases:
        sft_out = out / "sft"
        if not (_sft_done(sft_out) and (rl_config is None or rl_config.resume)):
            if main:
                _follow_sft_metrics(out)
            examples = list(sft_data.sft_examples(DatasetVersion.open(data), with_image=True))
            summary["sft"] = train_supervised(
                sft_config, examples, sft_out, kind="sft", vision=True
            )
        if main:
            _keep_sft_metrics(out)
        offset = _last_step(sft_out / "metrics.jsonl")
        if rl_config is None:
            if main:
                _link_final(sft_out / "final", out / "final")
        else:
            # RL starts from the SFT weights, which already hold any Stage-1 vision tower.
            rl_config = dataclasses.replace(
                rl_config, model=str((sft_out / "final").resolve()), vision_tower=""
            )
    if rl_config is not None:
        summary["rl"] = train_rl(rl_config, data, out, step_offset=offset, write_config=False)
    summary["final"] = str(out / "final")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training hybrid --data V --out R [preset=...] [key=value] [sft.key=value]
    [rl.key=value]``: SFT then RL in one job (§4.5), or one phase alone (Figure 2 presets)."""
    from training.data.version import DatasetVersionError

    epilog = (
        "presets: hybrid (SFT then RL), sft_only, rl_only; all start from model=.\n"
        "A bare key goes to every phase that has it; sft.KEY / rl.KEY to one phase.\n\n"
        "SFT keys:\n" + help_text(SFTConfig) + "\n\nRL keys:\n" + help_text(RLConfig)
    )
    args = command_parser(
        "hybrid",
        "Stage-2 SFT then RL in one run (the preprint's best setting, §4.5).",
        epilog,
    ).parse_args(argv)
    try:
        config = resolve_args(HybridConfig, args)
        check_model(config.sft.model, role="the model to train (model=)")
        pin_cuda_device(config.sft.device)
        result = run_hybrid(config, args.data, args.out)
    except (ConfigError, DatasetVersionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
