"""``python -m training bench``: score a checkpoint or an endpoint on a probe set.

    python -m training bench --model SPEC --probes DIR --out RUN [--batch-size 8]
        [--concurrency 16] [--max-new-tokens 16] [--limit N] [--prompt-suffix TEXT]

SPEC is ``URL#MODEL`` for an OpenAI-compatible endpoint (``--concurrency`` requests in flight),
anything else a local folder, hub id or adapter folder (``--batch-size`` probes per
``generate``). The probe set is opened and its ``content_sha256`` verified before any model is
loaded, and the model is checked by ``training.models_available.check_model`` first, so a bad
input fails in seconds with one line and exit code 2.

Each probe's prompt is its question followed by ``--prompt-suffix``, by default LLaVA-1.5's and
lmms-eval's POPE instruction "Answer the question using a single word or phrase." on a new
line. Decoding is greedy, at most ``--max-new-tokens`` tokens (16: a yes/no answer and the
first sentence POPE's parser reads).

Written into ``RUN``:

- ``predictions.jsonl``: one ``{"id", "answer", "parsed", "latency_ms"}`` per probe, in the
  probe set's order (``id`` is the probe's id in ``probes.jsonl``). ``parsed`` is the
  ``strict`` reading only; ``metrics.json`` applies all three parsers to ``answer`` again at
  scoring time. A probe whose call failed for good has ``"answer": null`` and an ``"error"``.
- ``metrics.json``: the run (model, settings, device, probes/s), the probe set (id, path,
  ``content_sha256``, which ``bench-compare`` checks) and ``splits``: for ``all`` and each
  split, for each parser, ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio``,
  ``unparsed``, ``n`` (and tp/fp/tn/fn) with ``f1_ci95`` (``training.probes.metrics``).

Progress goes to stderr, one line every ``--progress-every`` probes and at the end::

    bench: 400/3000 probes, 12.5 probes/s, eta 208 s

A run folder is written afresh each time (no resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from training.probes.answers import Answer, Question
from training.probes.layout import Probe, ProbeSet, ProbeSetError
from training.probes.metrics import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, score
from training.probes.parsers import PARSERS, parse_strict

METRICS_FORMAT = "fgam-bench-metrics"
METRICS_FORMAT_VERSION = 1
PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."


class BadInput(ValueError):
    """Something on the command line that cannot be scored; the message is one line."""


class Backend(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def answer_all(self, questions: Sequence[Question], sink: Any) -> None: ...


class Recorder:
    """Receives answers in any order, writes ``predictions.jsonl`` in probe order as soon as
    each prefix is complete, and prints the progress lines."""

    def __init__(self, path: Path, probes: Sequence[Probe], *, every: int, stream: IO[str]) -> None:
        self.probes, self.every, self.stream = probes, max(1, every), stream
        self.handle = path.open("w", encoding="utf-8", newline="\n")
        self.waiting: dict[int, Answer] = {}
        self.records: list[dict[str, Any]] = []
        self.done = 0
        self.started = time.perf_counter()

    def __call__(self, index: int, answer: Answer) -> None:
        self.waiting[index] = answer
        self.done += 1
        while len(self.records) in self.waiting:
            self._write(self.probes[len(self.records)], self.waiting.pop(len(self.records)))
        if self.done % self.every == 0 or self.done == len(self.probes):
            self.handle.flush()
            self.report()

    def _write(self, probe: Probe, answer: Answer) -> None:
        record: dict[str, Any] = {
            "id": probe.id,
            "answer": answer.text,
            "parsed": None if answer.text is None else parse_strict(answer.text),
            "latency_ms": answer.latency_ms,
        }
        if answer.error is not None:
            record["error"] = answer.error
        self.records.append(record)
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def report(self) -> None:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        left = len(self.probes) - self.done
        eta = f", eta {left / rate:.0f} s" if rate > 0 and left else ""
        print(
            f"bench: {self.done}/{len(self.probes)} probes, {rate:.1f} probes/s{eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        self.handle.close()


def make_backend(spec: str, args: argparse.Namespace) -> Backend:
    """The scorer a spec names; the model is checked before anything loads."""
    from training.models_available import check_model
    from training.stage2.generators import is_endpoint_spec

    check_model(spec, role="the model to benchmark (--model)")  # an endpoint passes as it is
    if is_endpoint_spec(spec):
        if not spec.partition("#")[2].strip():
            raise BadInput(f"--model {spec!r}: an endpoint spec is URL#MODEL; MODEL is empty")
        from training.probes.endpoint_scorer import EndpointScorer

        return EndpointScorer(
            spec,
            concurrency=args.concurrency,
            max_new_tokens=args.max_new_tokens,
            timeout=args.timeout,
        )
    if "://" in spec:
        raise BadInput(f"--model {spec!r}: an endpoint spec is URL#MODEL (the '#MODEL' is missing)")
    from training.probes.local_scorer import LocalScorer

    return LocalScorer.load(
        spec,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        dtype=args.dtype,
    )


def open_probes(path: str, *, verify: bool = True) -> ProbeSet:
    folder = Path(path)
    if not folder.is_dir():
        raise BadInput(f"--probes {path!r} is not a folder")
    try:
        return ProbeSet.open(folder, verify=verify)
    except ProbeSetError as err:
        raise BadInput(f"--probes: {err}") from err


def run_bench(
    backend: Backend,
    probe_set: ProbeSet,
    probes: Sequence[Probe],
    out: Path,
    *,
    model: str,
    settings: dict[str, Any],
    prompt_suffix: str = PROMPT_SUFFIX,
    progress_every: int = 50,
    stream: IO[str] | None = None,
) -> dict[str, Any]:
    """Answer every probe, write ``predictions.jsonl`` and ``metrics.json``; return the metrics."""
    out.mkdir(parents=True, exist_ok=True)
    questions = [
        Question(
            index=n,
            prompt=probe.question + prompt_suffix,
            image=lambda probe=probe: probe_set.image_bytes(probe),  # type: ignore[misc]
        )
        for n, probe in enumerate(probes)
    ]
    recorder = Recorder(
        out / "predictions.jsonl", probes, every=progress_every, stream=stream or sys.stderr
    )
    try:
        backend.answer_all(questions, recorder)
    finally:
        recorder.close()
    elapsed = recorder.elapsed_s
    if len(recorder.records) != len(probes):
        raise RuntimeError(f"{len(probes) - len(recorder.records)} probe(s) got no answer")
    metrics = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "model": model,
        **backend.describe(),
        "probe_set": {
            "id": probe_set.id,
            "path": str(probe_set.root.resolve()),
            "content_sha256": probe_set.manifest.get("content_sha256"),
            "kind": probe_set.manifest.get("kind"),
            "split": probe_set.manifest.get("split"),
            "probes": len(probes),
        },
        "settings": {**settings, "prompt_suffix": prompt_suffix},
        "n": len(probes),
        "failed": sum("error" in record for record in recorder.records),
        "elapsed_s": round(elapsed, 3),
        "probes_per_s": round(len(probes) / elapsed, 3) if elapsed > 0 else None,
        "predictions_parsed_with": "strict",
        "parsers": list(PARSERS),
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "level": BOOTSTRAP_LEVEL,
            "statistic": "f1",
            "unit": "probe",
        },
        "splits": score(probes, recorder.records),
    }
    text = json.dumps(metrics, indent=2, sort_keys=False) + "\n"
    (out / "metrics.json").write_text(text, encoding="utf-8")
    return metrics


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training bench",
        description="Score a checkpoint or an endpoint on a probe set (yes/no questions).",
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="URL#MODEL endpoint, folder or hub id")
    p.add_argument("--probes", required=True, help="a probe-set folder (manifest.json)")
    p.add_argument("--out", required=True, help="run folder: predictions.jsonl, metrics.json")
    p.add_argument("--batch-size", type=int, default=8, help="local models: probes per generate")
    p.add_argument("--concurrency", type=int, default=16, help="endpoints: requests in flight")
    p.add_argument("--max-new-tokens", type=int, default=16, help="most tokens per answer")
    p.add_argument("--limit", type=int, default=0, help="score only the first N probes (0: all)")
    p.add_argument("--prompt-suffix", default=PROMPT_SUFFIX, help="appended to each question")
    p.add_argument("--device", default="auto", help="local models: auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="local models: auto (bf16 on CUDA), fp32...")
    p.add_argument("--timeout", type=float, default=120.0, help="endpoints: seconds per call")
    p.add_argument("--progress-every", type=int, default=50, help="probes per progress line")
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing the probe set")
    return p


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    from training.models_available import ModelNotAvailable

    args = parser().parse_args(argv)
    try:
        for name in ("batch_size", "concurrency", "max_new_tokens", "progress_every"):
            if getattr(args, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be 1 or more")
        if args.limit < 0:
            raise BadInput("--limit must be 0 (all) or more")
        probe_set = open_probes(args.probes, verify=not args.no_verify)
        probes = list(probe_set.probes())
        if args.limit:
            probes = probes[: args.limit]
        if not probes:
            raise BadInput(f"--probes {args.probes!r} holds no probes")
        started = time.perf_counter()
        backend = make_backend(args.model, args)
    except (BadInput, ProbeSetError, ModelNotAvailable) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except (ValueError, OSError, RuntimeError) as err:  # from_pretrained refusing the model
        print(f"error: --model {args.model!r}: {_one_line(err)}", file=sys.stderr, flush=True)
        return 2
    settings = {
        "max_new_tokens": args.max_new_tokens,
        "limit": args.limit or None,
        "load_s": round(time.perf_counter() - started, 3),
    }
    metrics = run_bench(
        backend,
        probe_set,
        probes,
        Path(args.out),
        model=args.model,
        settings=settings,
        prompt_suffix=args.prompt_suffix,
        progress_every=args.progress_every,
    )
    overall = metrics["splits"]["all"]
    summary = ", ".join(
        f"{name} acc {m['accuracy']:.3f} f1 {m['f1']:.3f} yes {m['yes_ratio'] or 0:.2f} "
        f"unparsed {m['unparsed']}"
        for name, m in overall.items()
    )
    print(
        f"bench: {metrics['n']} probes in {metrics['elapsed_s']:.1f} s "
        f"({metrics['probes_per_s']} probes/s), {metrics['failed']} failed; {summary}",
        file=sys.stderr,
        flush=True,
    )
    print(json.dumps({"out": str(Path(args.out)), "n": metrics["n"], **overall["strict"]}))
    return 0
