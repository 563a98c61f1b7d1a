"""Trajectory generation throughput against the loopback OpenAI-compatible server.

    .venv/bin/python -m tests.bench.bench_trajectories [--latency 0.1] [--items 160]

Starts the loopback server (``tests.workers.llm_server.LLMServer``) in a separate process
(so its threads do not share this process's interpreter lock) with a simulated latency of
100 ms per call, playing M and the RM deterministically (``tests.workers.trajectory_players``:
the RM asks for one revision, then accepts, so every item costs 4 sequential calls: A_0, F_0,
A_1, F_1). Items then go through ``workers.trajectories.run_batch``, the code path of a
trajectory run's batch (``training.stage2.loop.rectify`` over ``EndpointGenerator``s with
``training.llm`` retries armed; M is a vision endpoint and gets a 640x480 JPEG per call), at
concurrency 1 and at concurrency 16, in the same run. Reports items/s and their ratio
(target: at least 10x). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from training.stage2.generators import make_generator
from workers.trajectories import TrajectoryItem, run_batch

ROOT = Path(__file__).resolve().parents[2]
REGIONS = (
    {"phrase": "red car", "box": [10, 60, 270, 310], "caption": "a blue car parked"},
    {"phrase": "dog", "box": [320, 70, 450, 300], "caption": "a small brown dog"},
    {"phrase": "tree", "box": [500, 0, 640, 200], "caption": "a green tree"},
)


def photo_like(rng: np.random.Generator) -> bytes:
    """A 640x480 JPEG about the size of a photo (tens of KB): a gradient with a few shapes and
    mild noise. (Pure noise would make every image ~250 KB, which no dataset holds.)"""
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 640 * 200, y / 480 * 180, (x + y) / 1120 * 220], axis=-1)
    for _ in range(6):
        x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
        w, h = rng.integers(40, 200), rng.integers(40, 160)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def make_items(count: int, *, with_image: bool = True) -> list[TrajectoryItem]:
    rng = np.random.default_rng(0)
    images = [photo_like(rng) for _ in range(8)]
    return [
        TrajectoryItem(
            key=str(i),
            question=f"Question {i}: what colour is the car on the left of the dog?",
            image=images[i % len(images)] if with_image else None,
            regions=REGIONS,
        )
        for i in range(count)
    ]


def measure(url: str, items: list[TrajectoryItem], concurrency: int, k: int) -> float:
    m = make_generator(f"{url}#bench-mllm", vision=True, timeout=30.0)
    rm = make_generator(f"{url}#bench-rm", timeout=30.0)
    run_batch(items[:2], m=m, rm=rm, k=k, concurrency=2)  # warm-up: imports, first connection
    start = time.perf_counter()
    outcomes = run_batch(items, m=m, rm=rm, k=k, concurrency=concurrency)
    elapsed = time.perf_counter() - start
    failed = [o for o in outcomes if o.error]
    if failed:
        sys.exit(f"{len(failed)} items failed, e.g. {failed[0].error}")
    steps = {len(o.rectification.steps) for o in outcomes if o.rectification}
    assert steps == {2}, f"every item should take one revision, got {steps}"
    return len(items) / elapsed


def serve(latency: float) -> None:
    """The server process: print the URL, then serve until killed."""
    from tests.workers.llm_server import LLMServer
    from tests.workers.trajectory_players import play

    server = LLMServer(latency=latency, responder=play)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per call")
    parser.add_argument("--items", type=int, default=160, help="items at concurrency 16")
    parser.add_argument("--serial-items", type=int, default=12, help="items at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("-k", type=int, default=3, help="most revisions (the RM stops at 1)")
    parser.add_argument("--no-image", action="store_true", help="text-only M (no JPEG per call)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.latency)
        return
    command = [sys.executable, "-m", "tests.bench.bench_trajectories", "--serve"]
    server = subprocess.Popen(
        [*command, "--latency", str(args.latency)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"loopback server {url}, {args.latency * 1000:.0f} ms per call, 4 calls per item")
        with_image = not args.no_image
        if with_image:
            sizes = [len(i.image or b"") for i in make_items(8)]
            print(f"M gets a 640x480 JPEG per call, {sum(sizes) / len(sizes) / 1024:.0f} KB mean")
        serial = measure(url, make_items(args.serial_items, with_image=with_image), 1, args.k)
        parallel = measure(
            url, make_items(args.items, with_image=with_image), args.concurrency, args.k
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"concurrency  1: {serial:7.2f} items/s ({args.serial_items} items)")
    print(f"concurrency {args.concurrency}: {parallel:7.2f} items/s ({args.items} items)")
    ratio = parallel / serial
    print(f"speed-up: {ratio:.1f}x (target >= 10x): {'met' if ratio >= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
