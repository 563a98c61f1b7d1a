"""CPU smoke runs of the real entry point on a synthetic version with a tiny random CLIP."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.__main__ import main

LEARN = [
    "batch_size=16",
    "lr=2e-3",
    "head_lr=3e-3",
    "gamma=1.0",
    "warmup_steps=10",
    "holdout_fraction=0.15",
    "relation_hidden=128",
    "weight_decay=0",
    "num_workers=1",
]


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_training_learns_regions_and_relations(tiny_clip, shapes_version, tmp_path):
    run = tmp_path / "run"
    code = main(
        [
            "stage1",
            "--data",
            str(shapes_version),
            "--out",
            str(run),
            f"model={tiny_clip}",
            "max_steps=240",
            "log_every=20",
            *LEARN,
        ]
    )
    assert code == 0
    metrics = lines(run / "metrics.jsonl")
    assert len(metrics) == 12
    assert {
        "step",
        "loss",
        "itcl_loss",
        "rtcl_loss",
        "scc_loss",
        "tau",
        "lr",
        "samples_per_s",
    } <= metrics[0].keys()
    assert metrics[-1]["loss"] < 0.7 * metrics[0]["loss"]
    result = json.loads((run / "final" / "eval.json").read_text())
    # 18 distinct region captions: chance R@1 is 5.6 %.
    assert result["region_text_r1"] > 4 * result["region_text_chance_r1"]
    assert result["relation_acc"] > result["relation_majority_baseline"] + 0.05
    assert result["relation_acc"] > 2 / 7
    evals = lines(run / "eval.jsonl")
    assert sum(e["final"] for e in evals) == 1 and len(evals) > 1  # each epoch and the end
    saved = json.loads((run / "config.json").read_text())
    assert saved["gamma"] == 1.0 and saved["model"] == str(tiny_clip)


def test_a_resumed_run_continues_the_same_run(tiny_clip, small_version, tmp_path):
    common = [
        "--data",
        str(small_version),
        f"model={tiny_clip}",
        "batch_size=4",
        "max_steps=8",
        "log_every=1",
        "save_every=4",
        "num_workers=0",
        "holdout_fraction=0.2",
        "lr=1e-3",
        "warmup_steps=2",
    ]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(["stage1", "--out", str(straight), *common]) == 0
    assert main(["stage1", "--out", str(broken), *common, "halt_at_step=5"]) == 0
    assert not (broken / "final").exists()
    assert main(["stage1", "--out", str(broken), *common]) == 0  # continues from step 4
    a, b = lines(straight / "metrics.jsonl"), lines(broken / "metrics.jsonl")
    assert [x["step"] for x in b] == list(range(1, 9))
    for x, y in zip(a, b, strict=True):
        assert x["lr"] == pytest.approx(y["lr"])
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
    one = torch.load(straight / "final" / "heads.pt", weights_only=False)["relation_head"]
    two = torch.load(broken / "final" / "heads.pt", weights_only=False)["relation_head"]
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-5)


def test_resuming_with_a_different_training_config_is_refused(
    tiny_clip, small_version, tmp_path, capsys
):
    run = tmp_path / "run"
    args = [
        "stage1",
        "--data",
        str(small_version),
        "--out",
        str(run),
        f"model={tiny_clip}",
        "batch_size=4",
        "max_steps=2",
        "num_workers=0",
        "holdout_fraction=0.2",
    ]
    assert main(args) == 0
    with pytest.raises(ValueError, match="differs in lr"):
        main([*args, "lr=0.5"])


def test_unknown_keys_are_rejected_with_a_hint(capsys, tmp_path):
    assert main(["stage1", "--data", "x", "--out", str(tmp_path), "batchsize=3"]) == 2
    assert "did you mean batch_size" in capsys.readouterr().err


def test_presets_set_the_ablation_weights_and_keys_override_them(tmp_path):
    from training.config import load_file, resolve
    from training.stage1.config import Stage1Config

    assert resolve(Stage1Config, {}, {"preset": "scc_only"}).weights() == {
        "itcl": 0.0,
        "rtcl": 0.0,
        "scc": 0.2,
    }
    (tmp_path / "c.toml").write_text('preset = "rtcl_only"\nbeta = 0.7\n')
    config = resolve(Stage1Config, load_file(tmp_path / "c.toml"), {"alpha": "0.1"})
    assert config.weights() == {"itcl": 0.1, "rtcl": 0.7, "scc": 0.0}


def test_an_ablation_preset_trains_with_only_its_term(tiny_clip, small_version, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                "stage1",
                "--data",
                str(small_version),
                "--out",
                str(run),
                f"model={tiny_clip}",
                "preset=scc_only",
                "batch_size=4",
                "max_steps=2",
                "log_every=1",
                "num_workers=0",
                "holdout_fraction=0.2",
            ]
        )
        == 0
    )
    line = lines(run / "metrics.jsonl")[-1]
    assert line["scc_loss"] > 0 and line["itcl_loss"] is None and line["rtcl_loss"] is None


def test_the_checkpoint_loads_as_a_llava_vision_tower(tiny_clip, small_version, tmp_path):
    from transformers import CLIPModel, CLIPVisionModel

    run = tmp_path / "run"
    assert (
        main(
            [
                "stage1",
                "--data",
                str(small_version),
                "--out",
                str(run),
                f"model={tiny_clip}",
                "batch_size=4",
                "max_steps=2",
                "num_workers=0",
                "holdout_fraction=0.2",
                "lr=1e-2",
            ]
        )
        == 0
    )
    tower = CLIPVisionModel.from_pretrained(run / "final" / "hf").eval()
    trained = CLIPModel.from_pretrained(run / "final" / "hf").eval()
    original = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        hidden = tower(pixels, output_hidden_states=True).hidden_states[-2]
        expected = trained.vision_model(pixels, output_hidden_states=True).hidden_states[-2]
        before = original.vision_model(pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(hidden, expected)
    assert not torch.allclose(hidden, before)  # the trained weights, not the starting ones


def test_max_text_tokens_above_the_text_models_limit_is_clamped_and_said_once(
    tiny_clip, tmp_path, monkeypatch, caplog
):
    from transformers import AutoTokenizer

    from training.data import synthetic

    plain = synthetic.make_sample

    def long_caption(rng, size):
        png, record = plain(rng, size)
        record["caption"] = ", ".join([record["caption"]] * 4)  # far past 32 tokens
        return png, record

    monkeypatch.setattr(synthetic, "make_sample", long_caption)
    version = synthetic.write_version(tmp_path / "long", images=12, shard_size=12)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    assert len(tokenizer(", ".join(["a red square left of a blue circle"] * 4))["input_ids"]) > 32

    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="training.stage1.train"):
        code = main(
            [
                "stage1",
                "--data",
                str(version),
                "--out",
                str(run),
                f"model={tiny_clip}",  # max_position_embeddings=32
                "max_text_tokens=100",
                "batch_size=4",
                "max_steps=2",
                "log_every=1",
                "num_workers=0",
                "holdout_fraction=0.2",
            ]
        )

    assert code == 0
    said = [r.getMessage() for r in caplog.records if "max_text_tokens" in r.getMessage()]
    assert said == [
        "max_text_tokens=100 is more than the text model's max_position_embeddings=32: "
        "captions are truncated to 32 tokens"
    ]
    assert all(math.isfinite(line["loss"]) for line in lines(run / "metrics.jsonl"))
    assert json.loads((run / "config.json").read_text())["max_text_tokens"] == 100
