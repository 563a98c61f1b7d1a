"""Yes/no metrics against numbers computed by hand, the unparsed rule, the bootstrap interval
and the per-split, per-parser shape of ``metrics.json``."""

from __future__ import annotations

import pytest

from training.probes.layout import Probe
from training.probes.metrics import binary_metrics, f1_bootstrap_ci, score


def test_binary_metrics_match_a_hand_computed_confusion_matrix():
    # gold:   y y y y n n n n n n
    # parsed: y y n - y n n - n y      TP=2 FN=2 (one unparsed) FP=2 TN=3, 2 unparsed
    gold = ["yes"] * 4 + ["no"] * 6
    parsed = ["yes", "yes", "no", None, "yes", "no", "no", None, "no", "yes"]
    m = binary_metrics(gold, parsed)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["unparsed"], m["n"]) == (2, 2, 3, 2, 2, 10)
    assert m["accuracy"] == pytest.approx(5 / 10)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(0.5)
    assert m["yes_ratio"] == pytest.approx(4 / 8)  # among the 8 parsed answers


def test_an_unparsed_answer_is_wrong_and_neither_yes_nor_no():
    all_unparsed = binary_metrics(["yes", "no"], [None, None])
    assert all_unparsed["accuracy"] == 0.0
    assert all_unparsed["precision"] == 0.0 and all_unparsed["recall"] == 0.0
    assert all_unparsed["yes_ratio"] is None and all_unparsed["unparsed"] == 2
    # Unparsing a gold "no" costs accuracy but not precision; a gold "yes" costs recall too.
    base = binary_metrics(["yes", "no", "no"], ["yes", "no", "no"])
    lost_no = binary_metrics(["yes", "no", "no"], ["yes", "no", None])
    lost_yes = binary_metrics(["yes", "yes", "no"], ["yes", None, "no"])
    assert (
        base["f1"] == 1.0 and lost_no["f1"] == 1.0 and lost_no["accuracy"] == pytest.approx(2 / 3)
    )
    assert lost_yes["recall"] == 0.5 and lost_yes["precision"] == 1.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 gold answers but 1"):
        binary_metrics(["yes", "no"], ["yes"])


def test_the_f1_interval_is_seeded_holds_the_estimate_and_narrows_with_more_probes():
    gold = ["yes", "no"] * 50
    parsed = (["yes", "no"] * 40) + (["no", "yes"] * 5) + ([None, "no"] * 5)
    f1 = binary_metrics(gold, parsed)["f1"]
    low, high = f1_bootstrap_ci(gold, parsed)
    assert low < f1 < high and low > 0 and high < 1
    assert f1_bootstrap_ci(gold, parsed) == [low, high]  # same seed, same interval
    assert f1_bootstrap_ci(gold, parsed, seed=1) != [low, high]
    low10, high10 = f1_bootstrap_ci(gold * 10, parsed * 10)
    assert high10 - low10 < (high - low) / 2  # ~ 1/sqrt(10) as wide
    # Drawn in chunks or at once, the same resamples give the same interval.
    assert f1_bootstrap_ci(gold, parsed, resamples=7) == f1_bootstrap_ci(gold, parsed, resamples=7)


def _probe(n: int, answer: str, split: str) -> Probe:
    return Probe(str(n), "a" * 64, "Is there a dog in the image?", answer, "pope", split, "dog")


def test_score_reports_every_split_and_parser_plus_all():
    probes = [_probe(0, "yes", "random"), _probe(1, "no", "random"), _probe(2, "yes", "popular")]
    predictions = [
        {"id": "0", "answer": "Yes."},
        {"id": "1", "answer": "There is not a dog."},
        {"id": "2", "answer": None, "error": "HTTP 400"},  # a failed call: unparsed by all
    ]
    result = score(probes, predictions)
    assert list(result) == ["all", "popular", "random"]
    assert all(list(result[split]) == ["strict", "pope", "word"] for split in result)
    assert result["all"]["strict"]["accuracy"] == pytest.approx(1 / 3)
    assert result["all"]["pope"]["accuracy"] == pytest.approx(2 / 3)
    assert result["all"]["pope"]["unparsed"] == 1  # POPE's rule would read "" as yes
    assert result["random"]["pope"]["accuracy"] == 1.0 and result["random"]["pope"]["n"] == 2
    assert result["popular"]["word"]["recall"] == 0.0
    # A resample of the two probes holds only the "no" one a quarter of the time: F1 0.
    assert result["random"]["pope"]["f1_ci95"] == [0.0, 1.0]
    with pytest.raises(KeyError, match="probe 2 has no prediction"):
        score(probes, {"0": "yes", "1": "no"})
