"""SFT of M and of the RM through the real entry points, on tiny models and a tiny version."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from training.data.version import DatasetVersion
from training.formats import STOP_PHRASE, is_stop
from training.stage2.config import SFTConfig
from training.stage2.data import sft_examples
from training.stage2.local import LocalGenerator
from training.stage2.prompts import critique_prompt
from training.stage2.sft import rm_main, sft_main, train_supervised


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_steps_reduce_the_loss_on_a_repeated_batch(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    examples = list(sft_examples(DatasetVersion.open(stage2_version_dir)))[:2]
    config = SFTConfig(
        model=str(tiny_llava_dir),
        max_steps=10,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        warmup_steps=0,
        log_every=1,
        lora="false",
        device="cpu",
    )
    result = train_supervised(config, examples, tmp_path / "run", kind="sft", vision=True)
    lines = metrics(tmp_path / "run")
    assert [line["step"] for line in lines] == list(range(1, 11))
    assert lines[-1]["loss"] < 0.6 * lines[0]["loss"]
    assert result["steps"] == 10 and not result["lora"]
    assert {"step", "epoch", "loss", "lr", "samples_per_s", "tokens_per_s"} <= set(lines[0])
    assert all(line["supervised_tokens"] > 0 for line in lines)


def test_the_sft_cli_writes_config_metrics_and_a_loadable_final(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "run"
    code = sft_main(
        [
            "--data",
            str(stage2_version_dir),
            "--out",
            str(run),
            f"model={tiny_llava_dir}",
            "max_steps=2",
            "batch_size=3",
            "grad_accum=2",
            "log_every=1",
            "seed=7",
        ]
    )
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 7 and config["grad_accum"] == 2 and config["rows"] == 9
    assert config["lora_enabled"] is False  # auto: a tiny model is fully tuned
    assert len(metrics(run)) == 2
    model = AutoModelForImageTextToText.from_pretrained(run / "final")
    before = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    lm = "model.language_model.layers.0.self_attn.q_proj.weight"
    tower = "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"
    after_state, before_state = model.state_dict(), before.state_dict()
    assert not torch.equal(after_state[lm], before_state[lm])  # the LM trained
    assert torch.equal(after_state[tower], before_state[tower])  # CLIP stayed frozen
    generator = LocalGenerator.from_pretrained(str(run / "final"), max_new_tokens=4)
    assert generator.vision and asyncio.run(generator.generate("Where?")).completion_tokens >= 1


def test_lora_adapts_only_the_language_model_and_reloads(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    assert (
        sft_main(
            [
                "--data",
                str(stage2_version_dir),
                "--out",
                str(run),
                f"model={tiny_llava_dir}",
                "max_steps=2",
                "batch_size=2",
                "grad_accum=1",
                "lora=true",
                "lr=1e-2",
            ]
        )
        == 0
    )
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)
    assert not any("vision_tower" in key for key in adapter)
    tuned = LocalGenerator.from_pretrained(str(run / "final"), max_new_tokens=6)
    base = LocalGenerator.from_pretrained(str(tiny_llava_dir), max_new_tokens=6)
    prompt_logits = []
    for generator in (tuned, base):
        inputs = generator.encode("Where is the red circle?", None)
        with torch.no_grad():
            prompt_logits.append(generator.model(**inputs).logits)
    assert not torch.allclose(prompt_logits[0], prompt_logits[1])  # the adapter is applied


@pytest.mark.parametrize("lora", ["false", "true"])
def test_vision_tower_comes_from_a_stage1_checkpoint(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path, lora: str
) -> None:
    """Under LoRA too: an adapter would name M as its base and bring M's own tower back, so
    final/ is written merged when the tower was replaced."""
    from transformers import AutoConfig, AutoModelForImageTextToText, CLIPVisionModel

    vision_config = AutoConfig.from_pretrained(tiny_llava_dir).vision_config
    torch.manual_seed(123)
    stage1 = CLIPVisionModel(vision_config)
    stage1.save_pretrained(tmp_path / "stage1-run" / "final" / "hf")  # Stage-1's layout
    run = tmp_path / "run"
    assert (
        sft_main(
            [
                "--data",
                str(stage2_version_dir),
                "--out",
                str(run),
                f"model={tiny_llava_dir}",
                "max_steps=1",
                "batch_size=2",
                "grad_accum=1",
                f"vision_tower={tmp_path / 'stage1-run'}",
                f"lora={lora}",
            ]
        )
        == 0
    )
    assert not (run / "final" / "adapter_config.json").exists()
    tower = AutoModelForImageTextToText.from_pretrained(run / "final").model.vision_tower
    expected = {k.removeprefix("vision_model."): v for k, v in stage1.state_dict().items()}
    got = {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_mismatched_vision_tower_is_refused_by_name(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path, capsys
) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "other")
    code = sft_main(
        [
            "--data",
            str(stage2_version_dir),
            "--out",
            str(tmp_path / "run"),
            f"model={tiny_llava_dir}",
            "max_steps=1",
            f"vision_tower={tmp_path / 'other'}",
        ]
    )
    assert code == 2 and "vision_tower=" in capsys.readouterr().err


def test_the_rm_learns_to_say_the_stop_phrase(
    tiny_rm_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "rm"
    assert (
        rm_main(
            [
                "--data",
                str(stage2_version_dir),
                "--out",
                str(run),
                f"model={tiny_rm_dir}",
                "max_steps=40",
                "batch_size=6",
                "grad_accum=1",
                "lr=5e-3",
                "warmup_steps=0",
                "log_every=10",
            ]
        )
        == 0
    )
    lines = metrics(run)
    assert lines[-1]["loss"] < lines[0]["loss"]
    rm = LocalGenerator.from_pretrained(str(run / "final"), max_new_tokens=12)
    version = DatasetVersion.open(stage2_version_dir)
    stop_row = next(r for r in version.stage2("rm") if r["feedback"] == STOP_PHRASE)
    answer = rm.generate_sync(
        critique_prompt(stop_row["question"], stop_row["response"], stop_row["evidence"])
    )
    assert isinstance(answer.text, str) and answer.text
    assert is_stop(answer.text), answer.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lerning_rate=1"], "unknown config key 'lerning_rate'"),
        (["modle=x"], "did you mean model"),
        (["lora=maybe"], "lora='maybe'"),
        (["batch_size=two"], "batch_size='two' is not a valid int"),
    ],
)
def test_bad_config_keys_are_rejected_by_name(
    args: list[str], message: str, stage2_version_dir: Path, tmp_path: Path, capsys
) -> None:
    code = sft_main(["--data", str(stage2_version_dir), "--out", str(tmp_path / "r"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_config_file_is_read_and_the_command_line_wins(
    tiny_rm_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "rm.toml"
    config_file.write_text(f'model = "{tiny_rm_dir}"\nmax_steps = 5\nlr = 0.01\n')
    run = tmp_path / "run"
    assert (
        rm_main(
            [
                "--data",
                str(stage2_version_dir),
                "--out",
                str(run),
                "--config",
                str(config_file),
                "max_steps=1",
                "batch_size=2",
                "grad_accum=1",
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["max_steps"] == 1 and config["lr"] == 0.01 and config["kind"] == "rm"


def test_torchrun_trains_on_two_processes(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "-m",
            "training",
            "sft",
            "--data",
            str(stage2_version_dir),
            "--out",
            str(run),
            f"model={tiny_llava_dir}",
            "max_steps=2",
            "batch_size=2",
            "grad_accum=1",
            "log_every=1",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    lines = metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    # 9 rows over 2 ranks: 5 per rank, 3 batches of 2, so step 1 is a third of an epoch
    assert lines[0]["epoch"] == pytest.approx(1 / 3, abs=1e-3)
    assert (run / "final" / "model.safetensors").is_file()
    assert done.stdout.count('"kind": "sft"') == 1


def test_a_vision_rm_trains_on_the_image_and_a_vision_model_can_be_a_text_rm(
    tiny_llava_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    for flag in ("true", "false"):
        run = tmp_path / flag
        assert rm_main([
            "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_llava_dir}",
            "max_steps=1", "batch_size=2", "grad_accum=1", f"rm_vision={flag}",
        ]) == 0  # fmt: skip
        assert json.loads((run / "config.json").read_text())["vision"] is (flag == "true")
    rm = LocalGenerator.from_pretrained(str(tmp_path / "false" / "final"), vision=False)
    image = next((stage2_version_dir / "images").rglob("*.png")).read_bytes()
    with_image = rm.generate_sync("Is it right?", image=image)
    assert (
        not rm.vision and with_image.prompt_tokens == rm.generate_sync("Is it right?").prompt_tokens
    )


def test_an_epoch_shorter_than_grad_accum_still_steps(
    tiny_rm_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    """18 RM rows in batches of 8 are 3 micro-batches: with grad_accum=8 each epoch is one
    (shorter) optimizer step, so epochs=2 makes exactly 2 steps."""
    run = tmp_path / "run"
    assert rm_main([
        "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_rm_dir}",
        "epochs=2", "batch_size=8", "grad_accum=8", "log_every=1",
    ]) == 0  # fmt: skip
    lines = metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    assert [line["epoch"] for line in lines] == [1.0, 2.0]
    assert all(line["samples_per_s"] > 0 for line in lines)


def test_held_out_trajectories_report_eval_loss(
    tiny_rm_dir: Path, stage2_version_dir: Path, tmp_path: Path
) -> None:
    from training.data.layout import key_in_holdout

    trajectories = {
        row["trajectory"] for row in DatasetVersion.open(stage2_version_dir).stage2("rm")
    }
    held = {t for t in trajectories if key_in_holdout(str(t), 0.3)}
    assert 0 < len(held) < len(trajectories)  # the fixture's ids give both sides rows
    run = tmp_path / "run"
    assert rm_main([
        "--data", str(stage2_version_dir), "--out", str(run), f"model={tiny_rm_dir}",
        "epochs=2", "batch_size=4", "grad_accum=1", "log_every=100", "holdout_fraction=0.3",
        "lr=5e-3", "warmup_steps=0",
    ]) == 0  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    # each trajectory has 2 RM rows (a correction and the stop row), never split between sides
    assert config["held_out_rows"] == 2 * len(held)
    assert config["rows"] == 2 * (len(trajectories) - len(held))
    evals = [line for line in metrics(run) if "eval_loss" in line]
    assert [line["epoch"] for line in evals] == [1.0, 2.0]
    assert all(line["eval_rows"] == 2 * len(held) for line in evals)
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]  # the stop rows generalise
