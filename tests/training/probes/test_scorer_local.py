"""``python -m training bench`` on the tiny random LLaVA, built offline and loaded by the scorer
through ``from_pretrained``: the real batched, greedy, left-padded generate path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.probes.probe_factory import write_probe_set
from training.probes.layout import ProbeSet
from training.probes.metrics import binary_metrics
from training.probes.parsers import PARSERS
from training.probes.scorer import main

ROWS = [
    ("dog", "yes", "random"), ("cat", "no", "random"), ("bird", "yes", "popular"),
    ("horse", "no", "popular"), ("sheep", "yes", "adversarial"), ("cow", "no", "adversarial"),
    ("bear", "yes", "random"), ("apple", "no", "random"), ("zebra", "yes", "popular"),
]  # fmt: skip


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probes") / "set"
    write_probe_set(folder, ROWS, images=4)
    return folder


def run_bench(model: Path, probes: Path, out: Path, *extra: str) -> dict:
    code = main(["--model", str(model), "--probes", str(probes), "--out", str(out),
                 "--device", "cpu", "--max-new-tokens", "6", *extra])  # fmt: skip
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def test_the_tiny_llava_answers_every_probe_and_the_metrics_follow_from_its_answers(
    tiny_llava_dir, probe_dir, tmp_path
):
    metrics = run_bench(tiny_llava_dir, probe_dir, tmp_path / "run", "--batch-size", "4")
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").open()]
    probes = list(ProbeSet.open(probe_dir).probes())
    assert [r["id"] for r in rows] == [p.id for p in probes]
    assert all(isinstance(r["answer"], str) for r in rows)  # random weights: any text at all
    assert all(r["parsed"] == PARSERS["strict"](r["answer"]) for r in rows)
    assert metrics["backend"] == "local" and metrics["device"] == "cpu"
    assert metrics["dtype"] == "float32" and metrics["batch_size"] == 4
    assert metrics["n"] == 9 and metrics["failed"] == 0 and metrics["probes_per_s"] > 0
    assert list(metrics["splits"]) == ["all", "adversarial", "popular", "random"]
    gold = [p.answer for p in probes]
    for name, parse in PARSERS.items():
        expected = binary_metrics(gold, [parse(r["answer"]) for r in rows])
        got = metrics["splits"]["all"][name]
        assert {k: got[k] for k in expected} == expected
    # The batch of 4 waited as one generate: its probes share one latency.
    assert len({r["latency_ms"] for r in rows[:4]}) == 1


def test_batched_and_one_by_one_generation_give_the_same_answers(
    tiny_llava_dir, probe_dir, tmp_path
):
    run_bench(tiny_llava_dir, probe_dir, tmp_path / "one", "--batch-size", "1")
    run_bench(tiny_llava_dir, probe_dir, tmp_path / "eight", "--batch-size", "8")
    one = [json.loads(line)["answer"] for line in (tmp_path / "one" / "predictions.jsonl").open()]
    eight = [
        json.loads(line)["answer"] for line in (tmp_path / "eight" / "predictions.jsonl").open()
    ]
    assert one == eight  # left padding with its attention mask changes nothing under greedy


def test_a_missing_image_fails_only_its_own_probe(tiny_llava_dir, tmp_path):
    folder = tmp_path / "set"
    write_probe_set(folder, ROWS[:4], images=2)
    probe_set = ProbeSet.open(folder)
    first = next(probe_set.probes())
    probe_set.image_path(first).unlink()  # probes 0 and 2 use that image
    metrics = run_bench(
        tiny_llava_dir, folder, tmp_path / "run", "--batch-size", "4", "--no-verify"
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").open()]
    assert [r["answer"] is None for r in rows] == [True, False, True, False]
    assert "is not in" in rows[0]["error"] and metrics["failed"] == 2


def test_a_folder_without_a_model_is_refused_in_one_line(probe_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["--model", str(tmp_path / "empty"), "--probes", str(probe_dir),
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "holds no config.json" in err and len(err.splitlines()) == 1
