"""lmms-eval hooks of an FGAM Studio probe set: copied byte for byte into every probe set as
``lmms_eval/utils.py`` by ``training.probes.lmms_task``, and named by its task YAML.

This file runs in lmms-eval's environment, not FGAM Studio's: it imports nothing from the
project (``tests/training/probes/test_lmms_eval_bridge.py`` checks that), only the standard
library and, lazily, lmms-eval's own POPE functions. So it carries its own copy of two rules
the project defines elsewhere, and the same test proves each copy agrees with the original:

- ``parse_strict`` is FORMATS.md's ``strict`` parser (``training.probes.parsers``);
- ``strict_metrics`` is ``training.probes.metrics.binary_metrics``: an unparsed answer is wrong
  for accuracy, never a positive, a miss when the gold answer is yes; ``yes_ratio`` is the
  share of predicted yes among parsed answers (NaN when nothing parsed: lmms-eval prints floats).

The ``pope_*`` metrics are lmms-eval's stock POPE figures, computed by its own functions on
the same answers: exact match after ``lower().strip()`` (so "Yes." is wrong), recall that leaves
unparsed answers out, and a ``yes_ratio`` of the *gold* answers. They are reported so that a
run compares with published lmms-eval POPE tables; the ``strict_*`` ones are ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STRICT_METRICS = (
    "strict_accuracy",
    "strict_precision",
    "strict_recall",
    "strict_f1",
    "strict_yes_ratio",
    "strict_unparsed",
)
POPE_METRICS = ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")


def doc_to_visual(doc: Mapping[str, Any]) -> list[Any]:
    """The probe's image (decoded by ``datasets`` from the bytes in the parquet), as RGB."""
    return [doc["image"].convert("RGB")]


def doc_to_text(
    doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, str] | None = None
) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question'].strip()}{kwargs.get('post_prompt', '')}"


def parse_strict(text: Any) -> str | None:
    """Exactly yes or no, after lower-casing and stripping spaces and one trailing period.

    >>> [parse_strict(t) for t in ["Yes", " no ", "Yes.", "NO.", "yes..", "Yes, it is", None]]
    ['yes', 'no', 'yes', 'no', None, None, None]
    """
    if not isinstance(text, str):
        return None
    answer = text.strip().lower()
    if answer.endswith("."):
        answer = answer[:-1].strip()
    return answer if answer in ("yes", "no") else None


def process_results(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """One probe's entry for every metric: ours from the strict reading, lmms-eval's POPE ones
    from its own ``pope_process_results`` (which needs ``question_id``; the parquet has it)."""
    row = {
        "question_id": doc["question_id"],
        "gold": doc["answer"],
        "parsed": parse_strict(results[0] if results else None),
    }
    entries: dict[str, Any] = dict.fromkeys(STRICT_METRICS, row)
    from lmms_eval.tasks.pope import utils as pope

    text = results[0] if results and isinstance(results[0], str) else ""
    entries.update(pope.pope_process_results(doc, [text]))
    return entries


def strict_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``binary_metrics`` of FGAM Studio over ``process_results`` rows ("yes" is positive).

    >>> gold, parsed = ["yes", "yes", "no", "yes"], ["yes", None, "yes", "no"]
    >>> m = strict_metrics([{"gold": g, "parsed": p} for g, p in zip(gold, parsed)])
    >>> m["accuracy"], m["precision"], m["recall"], m["unparsed"]
    (0.25, 0.5, 0.3333333333333333, 1)
    """
    tp = fp = tn = fn = unparsed = 0
    for row in rows:
        truth, answer = row["gold"], row["parsed"]
        if answer is None:
            unparsed += 1
            fn += truth == "yes"
        elif answer == "yes":
            tp += truth == "yes"
            fp += truth != "yes"
        else:
            tn += truth != "yes"
            fn += truth == "yes"
    gold_yes = sum(row["gold"] == "yes" for row in rows)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / gold_yes if gold_yes else 0.0
    parsed = len(rows) - unparsed
    return {
        "accuracy": (tp + tn) / len(rows) if rows else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / parsed if parsed else float("nan"),
        "unparsed": unparsed,
    }


# The aggregations the task YAML names, one per metric (lmms-eval calls each with the list of
# that metric's ``process_results`` entries).
def strict_accuracy(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["accuracy"]


def strict_precision(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["precision"]


def strict_recall(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["recall"]


def strict_f1(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["f1"]


def strict_yes_ratio(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["yes_ratio"]


def strict_unparsed(rows: Sequence[Mapping[str, Any]]) -> float:
    return strict_metrics(rows)["unparsed"]


def pope_accuracy(rows: Sequence[Mapping[str, Any]]) -> float:
    from lmms_eval.tasks.pope import utils as pope

    return float(pope.pope_aggregate_accuracy(rows))


def pope_precision(rows: Sequence[Mapping[str, Any]]) -> float:
    from lmms_eval.tasks.pope import utils as pope

    return float(pope.pope_aggregate_precision(rows))


def pope_recall(rows: Sequence[Mapping[str, Any]]) -> float:
    from lmms_eval.tasks.pope import utils as pope

    return float(pope.pope_aggregate_recall(rows))


def pope_f1_score(rows: Sequence[Mapping[str, Any]]) -> float:
    from lmms_eval.tasks.pope import utils as pope

    return float(pope.pope_aggregate_f1_score(rows))


def pope_yes_ratio(rows: Sequence[Mapping[str, Any]]) -> float:
    from lmms_eval.tasks.pope import utils as pope

    return float(pope.pope_aggregate_yes_ratio(rows))
