"""LLM captioning throughput against the loopback OpenAI-compatible server.

    .venv/bin/python -m tests.bench.bench_llm_captioning [--latency 0.05] [--regions 640]

Starts ``tests.workers.llm_server`` in a separate process (so the server's threads do not
share this process's interpreter lock with the client) with a simulated latency of 50 ms per
request, then captions regions through ``make_captioner("llm", ...)``, the code path a caption
run takes (one ``AsyncOpenAI`` client, semaphore, retries armed, region crops sent as JPEG
data URLs), at concurrency 1 and at concurrency 32. Reports regions/s and their ratio
(target: at least 20x). Regions come from 16 distinct 640x480 JPEGs, several boxes each.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from workers.captioning import make_captioner
from workers.region_captions import RegionToCaption

ROOT = Path(__file__).resolve().parents[2]


def make_regions(count: int) -> list[RegionToCaption]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(16):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(
            buffer, "JPEG", quality=85
        )
        images.append(buffer.getvalue())
    regions = []
    for i in range(count):
        x0, y0 = float(rng.integers(0, 500)), float(rng.integers(0, 360))
        w, h = float(rng.integers(20, 140)), float(rng.integers(20, 120))
        regions.append(
            RegionToCaption(
                key=str(i),
                box=(x0, y0, x0 + w, y0 + h),
                phrase=f"object {i}",
                image_width=640,
                image_height=480,
                global_caption="a street with cars, people and a dog",
                image=images[i % len(images)],
            )
        )
    return regions


def measure(url: str, regions: list[RegionToCaption], concurrency: int) -> float:
    captioner = make_captioner(
        "llm", model="bench", base_url=url, concurrency=concurrency, timeout=30.0
    )
    captioner.caption(regions[: min(4, len(regions))])  # warm-up: imports, first connection
    start = time.perf_counter()
    outcomes = captioner.caption(regions)
    elapsed = time.perf_counter() - start
    failed = [o for o in outcomes if o.caption is None]
    if failed:
        sys.exit(f"{len(failed)} regions failed, e.g. {failed[0].error}")
    return len(regions) / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds/request")
    parser.add_argument("--regions", type=int, default=640, help="regions at concurrency 32")
    parser.add_argument("--serial-regions", type=int, default=60, help="at concurrency 1")
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.llm_server", "--latency", str(args.latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"loopback server {url}, {args.latency * 1000:.0f} ms per request")
        serial = measure(url, make_regions(args.serial_regions), 1)
        parallel = measure(url, make_regions(args.regions), 32)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"concurrency  1: {serial:7.1f} regions/s ({args.serial_regions} regions)")
    print(f"concurrency 32: {parallel:7.1f} regions/s ({args.regions} regions)")
    ratio = parallel / serial
    print(f"speed-up: {ratio:.1f}x (target >= 20x): {'met' if ratio >= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
