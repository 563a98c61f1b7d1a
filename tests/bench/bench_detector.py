"""Detector benchmark on CPU with the tiny random Grounding DINO of the tests.

    .venv/bin/python -m tests.bench.bench_detector [--images 64] [--phrases 5] [--threads N]

Builds the tiny model once into ``var/bench/tiny-grounding-dino`` (the test fixture's
builder), loads it through ``load_detector`` and times ``Detector.detect`` at batch 1 and
batch 8 on the same images: images/s, their ratio, and the share of time spent in
preprocessing (the checkpoint's image processor), the forward pass, and post-processing
(decoding queries to pixel boxes, phrase matching, NMS; whatever is neither of the others).
Images are noise of one 640x480 size, so batch 8 really runs 8 rows per forward; the
tiny model's processor resizes them to 170x128. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from workers.detection import DetectorParams
from workers.grounding_dino import load_detector
from workers.tiny_models import build_tiny_grounding_dino

ROOT = Path(__file__).resolve().parents[2]
PHRASES = ["dog", "red car", "man on a bike", "tree", "white house", "kite", "cup", "sign"]


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run(detector: Any, images: list[Image.Image], phrases: list[str], batch: int) -> dict:
    pre, fwd = Timer(), Timer()
    original = detector._preprocess, detector._forward
    detector._preprocess, detector._forward = pre.wrap(original[0]), fwd.wrap(original[1])
    try:
        detector.detect(images[:batch], [phrases] * batch)  # warm-up at this shape
        pre.seconds = fwd.seconds = 0.0
        start = time.perf_counter()
        found = 0
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            found += sum(len(d) for d in detector.detect(chunk, [phrases] * len(chunk)))
        total = time.perf_counter() - start
    finally:
        detector._preprocess, detector._forward = original
    post = total - pre.seconds - fwd.seconds
    return {
        "batch": batch,
        "images_per_s": len(images) / total,
        "ms_per_image": 1000 * total / len(images),
        "pre": pre.seconds / total,
        "forward": fwd.seconds / total,
        "post": post / total,
        "detections": found,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--phrases", type=int, default=5, help="phrases per image prompt")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = build_tiny_grounding_dino(ROOT / "var" / "bench" / "tiny-grounding-dino")
    detector = load_detector(str(folder), device="cpu")
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        for _ in range(args.images)
    ]
    phrases = PHRASES[: args.phrases]
    print(
        f"tiny Grounding DINO on CPU ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads), {args.images} images 640x480, "
        f"{len(phrases)} phrases, default thresholds {DetectorParams()}"
    )
    results = [run(detector, images, phrases, batch) for batch in (1, 8)]
    print(f"{'batch':>5} {'img/s':>8} {'ms/img':>8} {'pre':>6} {'fwd':>6} {'post':>6} {'dets':>6}")
    for r in results:
        print(
            f"{r['batch']:>5} {r['images_per_s']:>8.1f} {r['ms_per_image']:>8.1f} "
            f"{r['pre']:>6.0%} {r['forward']:>6.0%} {r['post']:>6.0%} {r['detections']:>6}"
        )
    ratio = results[1]["images_per_s"] / results[0]["images_per_s"]
    print(f"batch 8 / batch 1 throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
