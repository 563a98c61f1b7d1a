"""``python -m training bench-compare``: McNemar on two hand-made runs with known p-values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest, chi2

from tests.training.probes.probe_factory import write_probe_set
from training.__main__ import main as training_main
from training.probes.compare import mcnemar
from training.probes.layout import ProbeSet
from training.probes.metrics import score


def write_run(folder: Path, probe_dir: Path, answers: list[str | None], model: str) -> Path:
    """A run folder as ``bench`` writes it, from answers given by hand."""
    probe_set = ProbeSet.open(probe_dir)
    probes = list(probe_set.probes())
    folder.mkdir(parents=True)
    records = [
        {"id": p.id, "answer": a, "parsed": None, "latency_ms": 1}
        for p, a in zip(probes, answers, strict=True)
    ]
    with (folder / "predictions.jsonl").open("w") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
    metrics = {
        "model": model,
        "probe_set": {
            "id": probe_set.id,
            "path": str(probe_dir),
            "content_sha256": probe_set.manifest["content_sha256"],
        },
        "splits": score(probes, records, resamples=10),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def flip(answer: str) -> str:
    return "no" if answer == "yes" else "yes"


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    rows = [("dog" if n % 2 else "cat", "yes" if n % 2 else "no", "random") for n in range(60)]
    write_probe_set(tmp_path / "probes", rows, images=3)
    return tmp_path / "probes"


def gold(probe_dir: Path) -> list[str]:
    return [p.answer for p in ProbeSet.open(probe_dir).probes()]


def compare(capsys, *args: str) -> tuple[int, dict]:
    code = training_main(["bench-compare", *args])
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == 0 else {})


def test_few_discordant_probes_use_the_exact_binomial_test(probe_dir, tmp_path, capsys):
    truth = gold(probe_dir)
    # A wrong on probes 0-7 (c = 8: B right there); B wrong on probes 50-51 (b = 2).
    a = [flip(t) if n < 8 else t for n, t in enumerate(truth)]
    b = [flip(t) if n in (50, 51) else t for n, t in enumerate(truth)]
    code, result = compare(
        capsys,
        str(write_run(tmp_path / "a", probe_dir, a, "A")),
        str(write_run(tmp_path / "b", probe_dir, b, "B")),
    )
    assert code == 0
    strict = result["parsers"]["strict"]
    assert (strict["b_a_right_b_wrong"], strict["c_a_wrong_b_right"]) == (2, 8)
    assert strict["test"] == "exact"
    assert strict["p_value"] == pytest.approx(112 / 1024)  # 2 * (C(10,0)+C(10,1)+C(10,2)) / 2^10
    assert strict["p_value"] == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    assert strict["accuracy_a"] == pytest.approx(52 / 60) and strict["accuracy_b"] == pytest.approx(
        58 / 60
    )
    assert result["model_a"] == "A" and result["probe_set"]["content_sha256"]


def test_many_discordant_probes_use_chi_square_with_continuity_correction(
    probe_dir, tmp_path, capsys
):
    truth = gold(probe_dir)
    # b = 10 (A right, B wrong on 0-9), c = 30 (A wrong, B right on 10-39); both right after.
    a = [flip(t) if 10 <= n < 40 else t for n, t in enumerate(truth)]
    b = [flip(t) if n < 10 else t for n, t in enumerate(truth)]
    code, result = compare(
        capsys,
        str(write_run(tmp_path / "a", probe_dir, a, "A")),
        str(write_run(tmp_path / "b", probe_dir, b, "B")),
        "--parser",
        "pope",
    )
    assert code == 0 and list(result["parsers"]) == ["pope"]
    pope = result["parsers"]["pope"]
    assert (pope["b_a_right_b_wrong"], pope["c_a_wrong_b_right"]) == (10, 30)
    assert pope["test"] == "chi2-cc" and pope["statistic"] == pytest.approx(361 / 40)
    assert pope["p_value"] == pytest.approx(chi2.sf(361 / 40, 1))
    assert pope["p_value"] == pytest.approx(0.002663, abs=1e-6)


def test_the_parsers_can_disagree_on_which_run_is_right(probe_dir, tmp_path, capsys):
    truth = gold(probe_dir)
    # A says "There is not one." on every gold no: POPE reads no (right), strict cannot parse.
    a = ["There is not one." if t == "no" else t for t in truth]
    code, result = compare(
        capsys,
        str(write_run(tmp_path / "a", probe_dir, a, "A")),
        str(write_run(tmp_path / "b", probe_dir, list(truth), "B")),
    )
    assert code == 0
    assert result["parsers"]["strict"]["c_a_wrong_b_right"] == 30
    assert result["parsers"]["pope"]["c_a_wrong_b_right"] == 0
    assert result["parsers"]["pope"]["p_value"] == 1.0


def test_runs_over_different_probe_sets_are_refused(probe_dir, tmp_path, capsys):
    other = tmp_path / "other"
    write_probe_set(other, [("dog", "yes", "random")] * 60, images=3)
    truth = gold(probe_dir)
    run_a = write_run(tmp_path / "a", probe_dir, truth, "A")
    run_b = write_run(tmp_path / "b", other, ["yes"] * 60, "B")
    code = training_main(["bench-compare", str(run_a), str(run_b)])
    err = capsys.readouterr().err
    assert code == 2 and "different probe sets" in err and len(err.strip().splitlines()) == 1


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    code = training_main(["bench-compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert code == 2 and "is not a bench run" in capsys.readouterr().err


def test_mcnemar_is_symmetric_and_bounded():
    assert mcnemar(3, 9)["p_value"] == mcnemar(9, 3)["p_value"]
    assert mcnemar(40, 40)["p_value"] == 1.0 and mcnemar(12, 12)["p_value"] == 1.0
    assert mcnemar(0, 20)["p_value"] == pytest.approx(2 / 2**20)
