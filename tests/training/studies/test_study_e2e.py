"""A whole Table 2 study on tiny random models on CPU, run the way a team without the web app
would: ``python -m training study-plan`` prints the commands, each is run as printed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.training.probes.probe_factory import write_probe_set
from training.data.synthetic import write_version
from training.stage1.tiny import make_tiny_clip
from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm
from training.studies.plan import plan_study
from training.studies.spec import load_study

REPO = Path(__file__).resolve().parents[3]

# Short runs that work on the tiny models (webapp/core/demo_models.py DEMO_JOB_CONFIG's).
SETTINGS = {
    "stage1": {
        "max_steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "save_every": 1000,
        "max_text_tokens": 32, "relation_hidden": 64, "num_workers": 0, "eval_max_images": 4,
        "device": "cpu",
    },
    "sft": {
        "max_steps": 2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "log_every": 1,
        "lora": "false", "max_length": 512, "device": "cpu",
    },
    "rl": {
        "max_steps": 1, "batch_size": 2, "num_generations": 2, "lora": "false",
        "max_new_tokens": 8, "rm_max_new_tokens": 8, "rm_device": "cpu", "device": "cpu",
    },
    "bench": {"batch_size": 4, "limit": 4, "device": "cpu", "max_new_tokens": 4},
}  # fmt: skip


def tower_of(folder: Path) -> dict[str, torch.Tensor]:
    """The CLIP vision tower's tensors of a LLaVA folder, loaded as the scorer loads it (a LoRA
    adapter folder on its base), keys without ``vision_model.``."""
    from training.stage2.local import load_model_and_processor

    model, _, _ = load_model_and_processor(
        str(folder), device=torch.device("cpu"), dtype=torch.float32
    )
    tower = model.model.vision_tower
    return {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}


def stage1_tower(folder: Path) -> dict[str, torch.Tensor]:
    """The vision half of a Stage-1 ``CLIPModel`` folder, keys without ``vision_model.``."""
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel.from_pretrained(folder)
    return {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}


def test_a_table2_study_runs_end_to_end_from_its_printed_commands(tmp_path: Path) -> None:
    version = write_version(tmp_path / "v1", images=16, shard_size=16)
    probes = tmp_path / "probes"
    rows = [("circle", "yes", "random"), ("dog", "no", "random")] * 2
    write_probe_set(probes, rows, images=2, image_size=32)
    # Stage-1's CLIP has exactly the tiny LLaVA's vision tower shape, so it can replace it.
    clip = make_tiny_clip(tmp_path / "clip", image_size=32, patch_size=8, width=64, layers=2)
    llava = build_tiny_llava(tmp_path / "llava")
    rm = build_tiny_text_lm(tmp_path / "rm")
    study = {
        "name": "tiny-table2", "version": str(version), "model": str(llava), "rm": str(rm),
        "clip": str(clip), "probe_sets": [str(probes)], "settings": SETTINGS,
        # Table 2, and an SFT arm under LoRA: its adapter must still carry the Stage-1 tower.
        "arms": ["table2", {"name": "sft_lora", "stage1": {"preset": "full"},
                            "stage2_kind": "sft", "stage2": {"lora": "true"}}],
    }  # fmt: skip
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study), "utf-8")
    runs = tmp_path / "runs"
    printed = subprocess.run(
        [sys.executable, "-m", "training", "study-plan", str(path), "--runs", str(runs),
         "--python", sys.executable],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    commands = [line for line in printed.splitlines() if not line.startswith("#")]
    steps = plan_study(load_study(path))
    assert [s.kind for s in steps] == [
        "stage1", "hybrid", "tower", "hybrid", "sft", "bench", "bench", "bench", "bench", "bench",
    ]  # fmt: skip
    started = time.perf_counter()
    for step, command in zip(steps, commands, strict=True):
        began = time.perf_counter()
        done = subprocess.run(shlex.split(command), cwd=REPO, capture_output=True, text=True)
        print(f"{step.kind} {step.short}: {time.perf_counter() - began:.1f} s")
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        run = runs / step.short
        if step.kind == "bench":
            metrics = json.loads((run / "metrics.json").read_text("utf-8"))
            assert metrics["splits"]["all"]["strict"]["n"] == 4
        else:
            assert (run / "final").is_dir() and (run / "metrics.jsonl").is_file(), command
    print(f"tiny table2 study: {len(steps)} steps in {time.perf_counter() - started:.1f} s")
    # Lineage: the arm without Stage-2 and the full arm score M with this study's Stage-1 tower.
    stage1, no_stage1, tower, full, sft_lora = (runs / s.short for s in steps[:5])
    trained = stage1_tower(stage1 / "final" / "hf")
    original = tower_of(llava)
    assert trained.keys() == original.keys()
    assert any(not torch.equal(trained[k], original[k]) for k in trained)  # Stage-1 trained it
    # Trained under LoRA, written merged (the plan's merge_lora=true), so the tower is in it.
    assert json.loads((sft_lora / "config.json").read_text("utf-8"))["lora_enabled"] is True
    assert not (sft_lora / "final" / "adapter_config.json").exists()
    for run in (tower, full, sft_lora):
        got = tower_of(run / "final")
        assert all(torch.equal(got[k], trained[k]) for k in trained), run
    untouched = tower_of(no_stage1 / "final")
    assert all(torch.equal(untouched[k], original[k]) for k in original)
