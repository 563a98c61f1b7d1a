"""Scorer throughput on CPU (``python -m training bench``), both back ends, same run.

    .venv/bin/python -m tests.bench.bench_scorer [--probes 64] [--max-new-tokens 8]
        [--latency 0.05] [--endpoint-probes 320] [--serial-probes 40] [--threads 1]

1. The tiny random LLaVA of the tests (built once into ``var/bench/scorer``), local, greedy:
   probes/s at ``--batch-size 8`` against ``--batch-size 1`` on the same probe set (target
   >= 3x). Every answer decodes ``--max-new-tokens`` tokens (random weights rarely say EOS).
2. The loopback OpenAI-compatible server (``tests.workers.llm_server``, in its own process so
   its threads do not share this one's GIL) at ``--latency`` seconds per call: probes/s at
   ``--concurrency 16`` against ``--concurrency 1`` (target >= 10x).

Each figure is the real command's ``metrics.json`` ``probes_per_s`` (model loading excluded).
Not collected by pytest; figures compare changes on one machine, they are not absolute speeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.training.probes.probe_factory import write_probe_set

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "bench" / "scorer"
OBJECTS = ["dog", "cat", "bird", "horse", "sheep", "cow", "bear", "zebra", "apple", "car"]


def tiny_llava() -> Path:
    from training.stage2.tiny import build_tiny_llava

    folder = CACHE / "llava"
    if not (folder / "model.safetensors").is_file():
        build_tiny_llava(folder)
    return folder


def probe_set(folder: Path, count: int) -> Path:
    rows = [
        (OBJECTS[n % len(OBJECTS)], "yes" if n % 2 else "no", ("random", "popular")[n % 3 % 2])
        for n in range(count)
    ]
    write_probe_set(folder, rows, images=max(1, count // 6))
    return folder


def bench(model: str, probes: Path, out: Path, *options: str) -> dict:
    """One ``python -m training bench`` run in this process; its metrics.json."""
    from training.__main__ import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["bench", "--model", model, "--probes", str(probes), "--out", str(out),
                     "--progress-every", "1000000", *options])  # fmt: skip
    if code != 0:
        raise SystemExit(f"bench {' '.join(options)} exited {code}")
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=64, help="probes for the local runs")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per call")
    parser.add_argument("--endpoint-probes", type=int, default=320, help="at concurrency 16")
    parser.add_argument("--serial-probes", type=int, default=40, help="at concurrency 1")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default). 1 because the tiny model is too small "
        "for threads to help, and on a shared 2-core VM two OpenMP threads competing with other "
        "processes made every generate ~6x slower and the batch-1/batch-8 ratio meaningless",
    )
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="bench-scorer-") as tmp:
        work = Path(tmp)
        llava = str(tiny_llava())
        local_probes = probe_set(work / "local-probes", args.probes)
        tokens = ("--device", "cpu", "--max-new-tokens", str(args.max_new_tokens))
        bench(llava, local_probes, work / "warm", *tokens, "--batch-size", "8", "--limit", "8")
        one = bench(llava, local_probes, work / "b1", *tokens, "--batch-size", "1")
        eight = bench(llava, local_probes, work / "b8", *tokens, "--batch-size", "8")
        ratio = eight["probes_per_s"] / one["probes_per_s"]
        print(f"tiny LLaVA, {args.probes} probes, {args.max_new_tokens} new tokens each:")
        print(f"  batch 1: {one['probes_per_s']:8.1f} probes/s")
        print(f"  batch 8: {eight['probes_per_s']:8.1f} probes/s")
        print(f"  speed-up: {ratio:.1f}x (target >= 3x): {'met' if ratio >= 3 else 'NOT met'}")

        server = subprocess.Popen(
            [sys.executable, "-m", "tests.workers.llm_server", "--latency", str(args.latency)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            spec = f"{url}#bench"
            serial_probes = probe_set(work / "serial-probes", args.serial_probes)
            many_probes = probe_set(work / "many-probes", args.endpoint_probes)
            serial = bench(spec, serial_probes, work / "c1", "--concurrency", "1")
            parallel = bench(spec, many_probes, work / "c16", "--concurrency", "16")
        finally:
            server.terminate()
            server.wait(timeout=10)
        ratio = parallel["probes_per_s"] / serial["probes_per_s"]
        print(f"loopback endpoint, {args.latency * 1000:.0f} ms per call:")
        print(f"  concurrency  1: {serial['probes_per_s']:8.1f} probes/s ({args.serial_probes})")
        print(
            f"  concurrency 16: {parallel['probes_per_s']:8.1f} probes/s ({args.endpoint_probes})"
        )
        print(f"  speed-up: {ratio:.1f}x (target >= 10x): {'met' if ratio >= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
