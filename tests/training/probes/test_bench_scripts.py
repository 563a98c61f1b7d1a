"""The GPU benchmark script runs its whole path on a CPU with ``--tiny`` (so it cannot rot
between the rare runs on a lent GPU)."""

from __future__ import annotations

import json

from tests.bench import gpu_bench_scorer


def test_the_gpu_scorer_benchmark_runs_end_to_end_with_tiny_models(tmp_path, capsys):
    code = gpu_bench_scorer.main(["--tiny", "--device", "cpu", "--probes", "12", "--images", "3",
                                  "--batch-size", "4", "--max-new-tokens", "2",
                                  "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["probes"] == 12 and report["failed"] == 0 and report["tiny"] is True
    assert report["image_tokens"] == 16 and report["probes_per_s"] > 0
    assert report["projected_9000_probes_s"] > 0 and isinstance(report["target_met"], bool)
    rows = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 12 and json.loads(rows[0])["id"] == "0"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["probe_set"]["probes"] == 12 and metrics["dtype"] == "float32"
