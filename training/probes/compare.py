"""``python -m training bench-compare RUN_A RUN_B``: are two runs' accuracies different?

Both runs answered the same probes, so the test is paired: McNemar's, on the probes exactly
one run got right (``b``: A right and B wrong; ``c``: A wrong and B right). Probes both got
right or both got wrong say nothing about the difference and are left out.

- ``b + c < 25``: the exact test, two-sided: ``p = min(1, 2 P(X <= min(b, c)))`` with
  ``X ~ Binomial(b + c, 1/2)`` (the usual rule of thumb for when the chi-square
  approximation stops being good);
- otherwise the chi-square test with Edwards' continuity correction,
  ``max(|b - c| - 1, 0)^2 / (b + c)`` on one degree of freedom (clamped at 0 so that
  ``b == c`` gives p = 1, where statsmodels' unclamped formula gives a little less).

Correctness is read with each parser from the raw answers (an unparsed answer is wrong), so
the test is reported per parser. Two runs over different probe sets are refused: their
``metrics.json`` must record the same ``probe_set.content_sha256``. The gold answers come from
the probe set itself, found at the path ``metrics.json`` records or given with ``--probes``,
and its hash must match too.

    python -m training bench-compare RUN_A RUN_B [--probes DIR] [--parser strict|pope|word]

Prints one JSON object (per parser: accuracies, b, c, the test used, statistic, p-value) on
stdout and a one-line summary per parser on stderr. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.probes.layout import ProbeSet, ProbeSetError
from training.probes.metrics import parse_all
from training.probes.parsers import PARSERS

EXACT_BELOW = 25  # discordant pairs under which the exact binomial test is used


class CompareError(ValueError):
    """Two runs that cannot be compared; the message is one line."""


def mcnemar(b: int, c: int) -> dict[str, Any]:
    """McNemar's test on the discordant counts ``b`` and ``c``.

    >>> mcnemar(2, 8)["p_value"], mcnemar(2, 8)["test"]
    (0.109375, 'exact')
    >>> m = mcnemar(10, 30)
    >>> m["test"], m["statistic"], round(m["p_value"], 6)
    ('chi2-cc', 9.025, 0.002663)
    >>> mcnemar(0, 0)["p_value"], mcnemar(5, 5)["p_value"]
    (1.0, 1.0)
    """
    n = b + c
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
        return {"test": "exact", "statistic": None, "p_value": min(1.0, 2 * tail)}
    statistic = max(abs(b - c) - 1, 0) ** 2 / n  # clamped: b == c is no evidence at all
    # The chi-square survival function with one degree of freedom: erfc(sqrt(x / 2)).
    return {
        "test": "chi2-cc",
        "statistic": statistic,
        "p_value": math.erfc(math.sqrt(statistic / 2)),
    }


def read_run(folder: str) -> tuple[dict[str, Any], dict[str, str | None]]:
    """``(metrics.json, {probe id: raw answer})`` of a run folder."""
    root = Path(folder)
    metrics_path, predictions_path = root / "metrics.json", root / "predictions.jsonl"
    if not metrics_path.is_file() or not predictions_path.is_file():
        raise CompareError(
            f"{folder!r} is not a bench run: it needs metrics.json and predictions.jsonl"
        )
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        answers = {}
        with predictions_path.open(encoding="utf-8") as rows:
            for line in rows:
                if line.strip():
                    row = json.loads(line)
                    answers[str(row["id"])] = row.get("answer")
    except (ValueError, KeyError) as err:
        raise CompareError(f"{folder!r}: unreadable run files ({err})") from err
    return metrics, answers


def compare_runs(
    run_a: str, run_b: str, *, probes: str | None = None, parsers: Sequence[str] = tuple(PARSERS)
) -> dict[str, Any]:
    metrics_a, answers_a = read_run(run_a)
    metrics_b, answers_b = read_run(run_b)
    sha_a = (metrics_a.get("probe_set") or {}).get("content_sha256")
    sha_b = (metrics_b.get("probe_set") or {}).get("content_sha256")
    if not sha_a or sha_a != sha_b:
        raise CompareError(
            f"the runs are over different probe sets (content_sha256 {str(sha_a)[:12]} vs "
            f"{str(sha_b)[:12]}): a paired test needs the same probes"
        )
    folder = probes or (metrics_a.get("probe_set") or {}).get("path")
    if not folder or not Path(folder).is_dir():
        raise CompareError(f"probe set folder {folder!r} not found; give it with --probes DIR")
    try:
        probe_set = ProbeSet.open(folder)
    except ProbeSetError as err:
        raise CompareError(f"--probes: {err}") from err
    if probe_set.manifest.get("content_sha256") != sha_a:
        raise CompareError(f"{folder}: its content_sha256 is not the one the runs were scored on")
    result: dict[str, Any] = {
        "run_a": run_a,
        "run_b": run_b,
        "model_a": metrics_a.get("model"),
        "model_b": metrics_b.get("model"),
        "probe_set": {"id": probe_set.id, "content_sha256": sha_a},
        "parsers": {},
    }
    rights: dict[str, list[tuple[bool, bool]]] = {name: [] for name in parsers}
    for probe in probe_set.probes():
        if probe.id not in answers_a or probe.id not in answers_b:
            raise CompareError(f"probe {probe.id} has no prediction in both runs (a --limit run?)")
        read_a, read_b = parse_all(answers_a[probe.id]), parse_all(answers_b[probe.id])
        for name in parsers:
            rights[name].append((read_a[name] == probe.answer, read_b[name] == probe.answer))
    for name, pairs in rights.items():
        b = sum(a and not other for a, other in pairs)
        c = sum(other and not a for a, other in pairs)
        n = len(pairs)
        result["parsers"][name] = {
            "n": n,
            "accuracy_a": sum(a for a, _ in pairs) / n if n else 0.0,
            "accuracy_b": sum(other for _, other in pairs) / n if n else 0.0,
            "b_a_right_b_wrong": b,
            "c_a_wrong_b_right": c,
            **mcnemar(b, c),
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training bench-compare",
        description="Paired McNemar test of two bench runs on the same probe set.",
    )
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--probes", help="the probe-set folder (default: the path metrics.json records)")
    p.add_argument("--parser", choices=[*PARSERS, "all"], default="all")
    args = p.parse_args(argv)
    parsers = list(PARSERS) if args.parser == "all" else [args.parser]
    try:
        result = compare_runs(args.run_a, args.run_b, probes=args.probes, parsers=parsers)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    for name, test in result["parsers"].items():
        print(
            f"{name}: accuracy A {test['accuracy_a']:.4f} vs B {test['accuracy_b']:.4f}, "
            f"b={test['b_a_right_b_wrong']} c={test['c_a_wrong_b_right']}, "
            f"McNemar {test['test']} p={test['p_value']:.4g}",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2))
    return 0
