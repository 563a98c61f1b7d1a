"""Stage-2 RL (GRPO with the RM as reward) and the hybrid SFT-then-RL run, end to end through
the real entry points, on the tiny LLaVA with an RM served by the loopback endpoint."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.workers.llm_server import LLMServer, images_in
from training.config import ConfigError
from training.data.layout import content_sha256
from training.data.version import DatasetVersion
from training.formats import STOP_PHRASE
from training.stage2.config import RLConfig
from training.stage2.hybrid import main as hybrid_main
from training.stage2.prompts import answer_prompt, evidence_text, revision_prompt
from training.stage2.rl import rl_main
from training.stage2.rl_data import (
    build_dataset,
    drop_long_prompts,
    evidence_by_image,
    prompt_lengths,
)

# Small and quick: 4 completions of at most 12 tokens per step.
QUICK = ["batch_size=4", "num_generations=4", "max_new_tokens=12", "device=cpu"]
METRIC_KEYS = {"step", "loss", "reward", "reward_rm", "reward_format", "kl", "lr", "samples_per_s"}


def parity_rm(request: Mapping[str, Any]) -> str:
    """A deterministic RM: accepts an answer of even length, corrects one of odd length."""
    text = request["messages"][-1]["content"]
    if isinstance(text, list):  # a vision RM's message: image part + text part
        text = "".join(part.get("text", "") for part in text if part.get("type") == "text")
    answer = re.search(r"^Answer: (.*)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return STOP_PHRASE if len(answer) % 2 == 0 else "The position is wrong."


@pytest.fixture
def rm_server() -> Iterator[LLMServer]:
    with LLMServer(responder=parity_rm) as server:
        yield server


@pytest.fixture
def rm_endpoint(rm_server: LLMServer) -> str:
    return f"{rm_server.url}#parity-rm"


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_config_rejects_unknown_keys_and_values_that_cannot_work(
    stage2_version_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", str(stage2_version_dir), "--out", str(tmp_path / "run")]
    assert rl_main([*base, "rm=x", "num_generation=4"]) == 2
    err = capsys.readouterr().err
    assert "'num_generation'" in err and "did you mean num_generations" in err
    assert rl_main([*base, "rm=x", "batch_size=6", "num_generations=4"]) == 2
    assert "batch_size=6 must be a multiple of num_generations=4" in capsys.readouterr().err
    assert rl_main([*base, "rm_weight=1"]) == 2
    assert "rm= is required" in capsys.readouterr().err
    assert rl_main([*base, "rm=x", "prompts=all"]) == 2
    assert "prompts='all'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_dataset_holds_revision_prompts_with_image_and_rm_evidence(
    stage2_version_dir: Path,
) -> None:
    version = DatasetVersion.open(stage2_version_dir)
    sft = list(version.stage2("sft"))
    rm_rows = list(version.stage2("rm"))
    dataset = build_dataset(version, RLConfig(rm="x"))
    assert len(dataset) == len(sft)
    first = dataset[0]
    assert first["prompt"] == [
        {
            "role": "user",
            "content": revision_prompt(sft[0]["question"], sft[0]["response"], sft[0]["feedback"]),
        }
    ]
    assert first["image"].size == (64, 64)  # decoded lazily from images/ by sha256
    assert sft[0]["image"] in first["image_path"]
    evidence = next(r["evidence"] for r in rm_rows if r["image"] == sft[0]["image"])
    assert first["evidence"] == evidence and first["question"] == sft[0]["question"]

    both = build_dataset(version, RLConfig(rm="x", prompts="both"))
    prompts = list(version.stage2("rl_prompts"))
    assert len(both) == len(sft) + len(prompts)
    assert both[len(sft)]["prompt"][0]["content"] == answer_prompt(prompts[0]["question"])


def test_images_without_an_rm_row_get_evidence_from_their_stage1_regions(
    stage2_version_dir: Path,
) -> None:
    version = DatasetVersion.open(stage2_version_dir)
    held_out = next(version.eval_items())["image"]  # never in stage2/, so not in rm.jsonl
    record = next(r.record for r in version.stage1_records() if r.record["image"] == held_out)
    regions = sorted(record["regions"], key=lambda r: r["id"])
    evidence = evidence_by_image(version, {held_out})
    assert evidence == {held_out: evidence_text(regions)}
    assert regions[0]["phrase"] in evidence[held_out]


def test_prompts_too_long_for_max_length_are_left_out(
    stage2_version_dir: Path, tiny_llava_dir: Path
) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    dataset = build_dataset(DatasetVersion.open(stage2_version_dir), RLConfig(rm="x"))

    def lengthen_odd_rows(row: dict[str, Any], index: int) -> dict[str, Any]:
        extra = " The feedback goes on and on." * (index % 2) * 4
        return {"prompt": [{"role": "user", "content": row["prompt"][0]["content"] + extra}]}

    dataset = dataset.map(lengthen_odd_rows, with_indices=True)
    lengths = prompt_lengths(dataset, processor)
    assert lengths[1] > lengths[0]
    # the measured length is what the processor feeds M: template + 16 image tokens + text
    content = [{"type": "image"}, {"type": "text", "text": dataset[1]["prompt"][0]["content"]}]
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(images=[dataset[1]["image"]], text=[text], add_special_tokens=False)
    assert lengths[1] == len(inputs["input_ids"][0])
    config = RLConfig(rm="x", max_new_tokens=10, max_length=lengths[0] + 10)
    kept, dropped = drop_long_prompts(dataset, processor, config)
    assert dropped == len(dataset) // 2 and len(kept) + dropped == len(dataset)
    assert kept["prompt"] == dataset.select(range(0, len(dataset), 2))["prompt"]
    with pytest.raises(ConfigError, match="max_length=20"):
        drop_long_prompts(dataset, processor, RLConfig(rm="x", max_new_tokens=10, max_length=20))


def test_a_bad_row_is_named_and_nothing_trains(
    stage2_version_dir: Path,
    tiny_llava_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    version = tmp_path / "broken"
    shutil.copytree(stage2_version_dir, version)
    sft = version / "stage2" / "sft.jsonl"
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    del rows[1]["feedback"]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["content_sha256"] = content_sha256(version)
    (version / "manifest.json").write_text(json.dumps(manifest))
    # Models that are there (the endpoint is never called): only the data is wrong.
    models = [f"model={tiny_llava_dir}", "rm=http://127.0.0.1:1/v1#rm"]
    args = ["--data", str(version), "--out", str(tmp_path / "run"), *models]
    assert rl_main(args) == 2
    assert "stage2/sft.jsonl row 2: missing or not text: feedback" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_rl_run_with_a_deterministic_reward_changes_the_policy(
    stage2_version_dir: Path, tiny_llava_dir: Path, tmp_path: Path, rm_endpoint: str
) -> None:
    run = tmp_path / "rl"
    code = rl_main(
        [
            "--data", str(stage2_version_dir), "--out", str(run),
            f"model={tiny_llava_dir}", f"rm={rm_endpoint}", "max_steps=2", "lr=1e-3", *QUICK,
        ]
    )  # fmt: skip
    assert code == 0
    lines = metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert line.keys() >= METRIC_KEYS and line["phase"] == "rl"
        # the RM term is +1 / -1 per completion: its mean follows the RM's accept rate
        assert line["reward_rm"] == pytest.approx(2 * line["rm_accept_rate"] - 1)
    assert lines[1]["kl"] > 0  # the policy moved away from the reference
    # what the RM judged is the sampled completion itself (parity_rm reads its first line)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4
    for sample in samples:
        first_line = sample["answer"].strip().split("\n")[0]
        accepted = len(first_line) % 2 == 0
        assert sample["rm_feedback"] == (STOP_PHRASE if accepted else "The position is wrong.")
        assert sample["rm_reward"] == (1.0 if accepted else -1.0)
    config = json.loads((run / "config.json").read_text())
    assert config["rm"] == rm_endpoint and config["beta"] == 0.04

    before, after = weights(tiny_llava_dir), weights(run / "final")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)  # CLIP stays frozen, as in LLaVA
    provenance = json.loads((run / "final" / "fgam_run.json").read_text())
    assert provenance["steps"] == 2 and provenance["prompt_versions"]["revision"]

    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(run / "final")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    AutoProcessor.from_pretrained(run / "final")


def test_a_lora_run_with_a_local_rm_adapts_only_the_language_model(
    stage2_version_dir: Path, tiny_llava_dir: Path, tiny_rm_dir: Path, tmp_path: Path
) -> None:
    from training.stage2.local import LocalGenerator

    run = tmp_path / "rl-lora"
    code = rl_main(
        [
            "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}",
            f"rm={tiny_rm_dir}", "rm_max_new_tokens=6", "rm_device=cpu", "max_steps=1",
            "lora=true", "lora_r=4", "lr=1e-2", *QUICK,
        ]
    )  # fmt: skip
    assert code == 0
    (line,) = metrics(run)
    assert line["reward_rm"] == pytest.approx(2 * line["rm_accept_rate"] - 1)
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_llava_dir.resolve())
    tensors = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert tensors and all("language_model" in k for k in tensors)
    generator = LocalGenerator.from_pretrained(str(run / "final"), device="cpu", max_new_tokens=3)
    assert generator.vision


def test_hybrid_runs_sft_then_rl_into_one_run_folder(
    stage2_version_dir: Path,
    tiny_llava_dir: Path,
    tmp_path: Path,
    rm_server: LLMServer,
    rm_endpoint: str,
) -> None:
    run = tmp_path / "hybrid"
    code = hybrid_main(
        [
            "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}",
            "seed=3", "sft.max_steps=2", "sft.log_every=1", "sft.batch_size=2", "sft.lr=1e-3",
            f"rl.rm={rm_endpoint}", "rl.rm_vision=true", "rl.max_steps=2",
            *(f"rl.{q}" for q in QUICK),
        ]
    )  # fmt: skip
    assert code == 0
    # a vision RM gets the row's image with each critique
    (image,) = images_in(rm_server.last_request[""])
    assert image.startswith("data:image/png;base64,")
    lines = metrics(run)
    assert [(line["step"], line.get("phase")) for line in lines] == [
        (1, None), (2, None), (3, "rl"), (4, "rl"),
    ]  # fmt: skip
    assert not (run / "metrics.jsonl").is_symlink()
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "hybrid" and config["sft"]["seed"] == config["rl"]["seed"] == 3
    # RL started from the SFT weights, which are also its KL reference
    provenance = json.loads((run / "final" / "fgam_run.json").read_text())
    assert provenance["policy_init"] == str((run / "sft" / "final").resolve())
    sft, final = weights(run / "sft" / "final"), weights(run / "final")
    assert any(not torch.equal(sft[k], final[k]) for k in sft)


def test_the_single_phase_presets_run_one_phase_and_bad_keys_are_named(
    stage2_version_dir: Path,
    tiny_llava_dir: Path,
    tmp_path: Path,
    rm_endpoint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--data", str(stage2_version_dir), "--out", str(tmp_path / "bad")]
    assert hybrid_main([*base, "preset=ppo"]) == 2
    assert "preset='ppo'" in capsys.readouterr().err
    assert hybrid_main([*base, "sft.num_generations=4"]) == 2
    assert "num_generations" in capsys.readouterr().err
    assert hybrid_main([*base, "rl.rm=x", "lrr=1"]) == 2
    assert "'lrr'" in capsys.readouterr().err

    run = tmp_path / "sft-only"
    args = ["--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}"]
    assert hybrid_main([*args, "preset=sft_only", "max_steps=1", "device=cpu"]) == 0
    assert [line.get("phase") for line in metrics(run)] == [None]
    assert weights(run / "final").keys() == weights(run / "sft" / "final").keys()
    assert not (run / "checkpoints").exists()

    run = tmp_path / "rl-only"
    args = ["--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}"]
    rl_args = [f"rl.rm={rm_endpoint}", "max_steps=1", *(f"rl.{q}" for q in QUICK)]
    assert hybrid_main([*args, "preset=rl_only", *rl_args]) == 0
    assert [(line["step"], line["phase"]) for line in metrics(run)] == [(1, "rl")]
    assert not (run / "sft").exists()
    provenance = json.loads((run / "final" / "fgam_run.json").read_text())
    assert provenance["policy_init"] == str(tiny_llava_dir.resolve())


def test_an_interrupted_rl_run_resumes_from_its_last_checkpoint(
    stage2_version_dir: Path, tiny_llava_dir: Path, tmp_path: Path, rm_endpoint: str
) -> None:
    run = tmp_path / "rl-resume"
    args = [
        "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}",
        f"rm={rm_endpoint}", "save_every=1", "keep_checkpoints=1", *QUICK,
    ]  # fmt: skip
    assert rl_main([*args, "max_steps=1"]) == 0
    # a line logged after the checkpoint (as if the process died before the next save)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 2, "loss": 9.9}) + "\n")
    assert rl_main([*args, "max_steps=2"]) == 0
    lines = metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    assert lines[1]["loss"] != 9.9 and lines[1]["phase"] == "rl"
    assert [p.name for p in (run / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
