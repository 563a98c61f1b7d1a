"""Yes/no metrics of a probe set's answers, per split and per parser: ``metrics.json``.

How an unparsed answer counts (POPE-style; decided here, used everywhere):

- it is wrong for ``accuracy`` (whose denominator is every probe, ``n``);
- it is neither a predicted yes nor a predicted no: it is never a true or false positive, so
  ``precision`` = TP / predicted yes; a gold "yes" left unparsed is a miss, so ``recall`` =
  TP / gold yes (lmms-eval's stock POPE recall leaves such probes out of its denominator;
  the two agree whenever nothing is unparsed);
- ``yes_ratio`` is the share of predicted yes among the *parsed* answers (POPE's bias figure);
  ``unparsed`` counts the rest.

Ratios whose denominator is 0 are 0.0 (scikit-learn's ``zero_division=0``), except
``yes_ratio`` with nothing parsed, which is None: there is no bias to report.

The 95% interval for F1 is a percentile bootstrap over probes: ``resamples`` resamples of the
``n`` probes with replacement (numpy, seeded, so the same answers always give the same
interval), F1 recomputed on each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from training.probes.parsers import PARSERS, Parsed

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # resample indices drawn at most this many at a time (memory bound)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def binary_metrics(gold: Sequence[str], parsed: Sequence[Parsed]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 ("yes" is positive), yes-ratio, unparsed count and n.

    >>> m = binary_metrics(["yes", "yes", "no", "no"], ["yes", None, "yes", "no"])
    >>> m["accuracy"], m["precision"], m["recall"], round(m["f1"], 4), m["yes_ratio"]
    (0.5, 0.5, 0.5, 0.5, 0.6666666666666666)
    >>> m["unparsed"], m["n"], m["tp"], m["fp"], m["tn"], m["fn"]
    (1, 4, 1, 1, 1, 1)
    >>> binary_metrics([], [])["f1"], binary_metrics(["no"], [None])["yes_ratio"]
    (0.0, None)
    """
    if len(gold) != len(parsed):
        raise ValueError(f"{len(gold)} gold answers but {len(parsed)} parsed ones")
    tp = fp = tn = fn = unparsed = 0
    for truth, answer in zip(gold, parsed, strict=True):
        if answer is None:
            unparsed += 1
            fn += truth == "yes"  # a missed yes; a gold no left unparsed is no negative at all
        elif answer == "yes":
            tp += truth == "yes"
            fp += truth != "yes"
        else:
            tn += truth != "yes"
            fn += truth == "yes"
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, sum(truth == "yes" for truth in gold))
    parsed_count = len(gold) - unparsed
    return {
        "accuracy": _ratio(tp + tn, len(gold)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / parsed_count if parsed_count else None,
        "unparsed": unparsed,
        "n": len(gold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def f1_bootstrap_ci(
    gold: Sequence[str],
    parsed: Sequence[Parsed],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> list[float] | None:
    """``[low, high]`` percentile bootstrap interval of F1 over probes; None for no probes.

    F1 = 2 TP / (2 TP + FP + FN_gold) where FN_gold counts every gold yes not answered yes:
    the same F1 as ``binary_metrics`` (2PR/(P+R) simplifies to it), vectorised over resamples.

    >>> gold = ["yes"] * 50 + ["no"] * 50
    >>> low, high = f1_bootstrap_ci(gold, ["yes"] * 40 + ["no"] * 10 + ["no"] * 45 + [None] * 5)
    >>> low < binary_metrics(gold, ["yes"] * 40 + ["no"] * 60)["f1"] < high
    True
    >>> f1_bootstrap_ci(["yes"], ["yes"])
    [1.0, 1.0]
    """
    import numpy as np

    n = len(gold)
    if n == 0:
        return None
    gold_yes = np.fromiter((g == "yes" for g in gold), dtype=bool, count=n)
    said_yes = np.fromiter((p == "yes" for p in parsed), dtype=bool, count=n)
    tp_each = (gold_yes & said_yes).astype(np.int64)
    fp_each = (~gold_yes & said_yes).astype(np.int64)
    fn_each = (gold_yes & ~said_yes).astype(np.int64)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    scores = []
    for start in range(0, resamples, rows):
        picks = rng.integers(0, n, size=(min(rows, resamples - start), n))  # [resamples, n]
        tp, fp, fn = tp_each[picks].sum(1), fp_each[picks].sum(1), fn_each[picks].sum(1)
        den = 2 * tp + fp + fn
        scores.append(np.divide(2 * tp, den, out=np.zeros(len(den)), where=den > 0))
    alpha = (1 - level) / 2
    low, high = np.quantile(np.concatenate(scores), [alpha, 1 - alpha])
    return [float(low), float(high)]


def parse_all(answer: str | None) -> dict[str, Parsed]:
    """Every parser's reading of one raw answer; a failed call (None) is unparsed by all."""
    return {name: (None if answer is None else parse(answer)) for name, parse in PARSERS.items()}


def score(
    probes: Iterable[Any],
    predictions: Iterable[Mapping[str, Any]] | Mapping[str, str | None],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The ``splits`` part of ``metrics.json``: ``{split: {parser: metrics}}`` with ``"all"``.

    ``probes`` are ``training.probes.layout.Probe`` objects (``id``, ``answer``, ``split``);
    ``predictions`` are prediction records (``{"id", "answer", ...}``, as ``predictions.jsonl``
    holds) or a mapping probe id -> raw answer. Every probe needs a prediction (KeyError
    otherwise); an answer of None (a call that failed) is unparsed by every parser. Each
    parser's metrics carry ``f1_ci95``.
    """
    answers: Mapping[str, str | None]
    if isinstance(predictions, Mapping):
        answers = predictions
    else:
        answers = {str(row["id"]): row.get("answer") for row in predictions}
    groups: dict[str, list[tuple[str, dict[str, Parsed]]]] = {"all": []}
    for probe in probes:
        if probe.id not in answers:
            raise KeyError(f"probe {probe.id} has no prediction")
        row = (probe.answer, parse_all(answers[probe.id]))
        groups["all"].append(row)
        groups.setdefault(probe.split, []).append(row)
    result: dict[str, Any] = {}
    for split in ["all", *sorted(k for k in groups if k != "all")]:
        gold = [truth for truth, _ in groups[split]]
        result[split] = {}
        for name in PARSERS:
            parsed = [readings[name] for _, readings in groups[split]]
            metrics = binary_metrics(gold, parsed)
            metrics["f1_ci95"] = f1_bootstrap_ci(gold, parsed, resamples=resamples, seed=seed)
            result[split][name] = metrics
    return result
