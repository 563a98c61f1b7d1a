"""Probe-set build benchmark: a 3,000-probe POPE split over a dataset of 1,000,000 regions.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_bench_probes \\
        .venv/bin/python -m tests.bench.bench_probes [--images 100000] [--per-image 10]

The database named there is dropped, created and migrated on every run, so its name has to
contain "bench". Rows are generated with ``COPY`` (``webapp.core.importing.bulk``, as
``bench_export`` does): ``images`` images (640x480, remote uris) with ``per-image`` accepted
regions each, their phrases drawn from an 80-name vocabulary written in varied forms ("Dogs",
"the dog", "dog") so the normaliser has work to do; half the images are exhaustively
reviewed. Then ``VACUUM (ANALYZE)``, as autovacuum would have done to a live database.

Each split (random, popular, adversarial: 500 images x 3 positives + 3 negatives = 3,000
probes) is built in a fresh child process, in reference mode (the images are remote uris, so
the lmms-eval task, which embeds image bytes, is left out, as the builder does for such sets).
The time is ``start_probe_set`` + ``build_probe_set``: reading, drawing, the leakage check,
writing, hashing, publishing. Target: at most 10 s. The load time is printed separately.

Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench_export import _defaults, setup_django
from tests.bench.database import recreate_database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_bench_probes"
TARGET_S = 10.0
NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "ski", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
]  # fmt: skip
SPLITS = ("random", "popular", "adversarial")


def phrase(name: str, k: int) -> str:
    """The same name written three ways, as annotators and detectors do."""
    form = k % 3
    if form == 1:
        return f"the {name}"
    if form == 2:
        return name.title()
    return name


def region_row(image_id: int, n: int, k: int) -> tuple:
    """Region k of image n: a stride through the vocabulary (some names repeat within an
    image, as two cars do), so frequencies and co-occurrences are uneven."""
    name = NAMES[(n * 7 + k * k * 3 + n // 13) % len(NAMES)]
    box = (10.0 + 20 * k, 20.0 + 10 * k, 60.0 + 20 * k, 90.0 + 10 * k)
    return (image_id, 640, 480, *box, phrase(name, n + k), "an object", "detector", 0.9,
            "accepted")  # fmt: skip


def generate(name: str, images: int, per_image: int) -> int:
    from django.db import transaction
    from django.utils import timezone

    from webapp.catalog.models import Dataset, Image
    from webapp.core.importing.bulk import insert_rows
    from webapp.regions.models import Region

    now = timezone.now()
    with transaction.atomic():
        dataset = Dataset.objects.create(name=name)
        columns = ("dataset_id", "sha256", "width", "height", "uri", "captions",
                   "exhaustively_reviewed_at")  # fmt: skip
        rows = (
            (
                dataset.pk,
                hashlib.sha256(f"{name}-{i}".encode()).hexdigest(),
                640,
                480,
                f"https://images.example.org/{name}/{i:08d}.jpg",
                [f"scene {i}"],
                now if i % 2 == 0 else None,
            )
            for i in range(images)
        )
        insert_rows(Image, columns, rows, _defaults(Image, columns, now), fresh=True)
        ids = list(
            Image.objects.filter(dataset=dataset).order_by("id").values_list("id", flat=True)
        )
        region_columns = ("image_id", "image_width", "image_height", "x0", "y0", "x1", "y1",
                          "phrase", "caption", "origin", "score", "status")  # fmt: skip
        rows = (
            region_row(image_id, n, k) for n, image_id in enumerate(ids) for k in range(per_image)
        )
        insert_rows(
            Region, region_columns, rows, _defaults(Region, region_columns, now), fresh=True
        )
    return len(ids) * per_image


def child_build(split: str, out: str) -> dict:
    from webapp.probes.building import build_probe_set, start_probe_set

    phases: dict[str, float] = {}

    def seen_phase(phase: str, done: int, total: int) -> None:
        phases.setdefault(phase, time.perf_counter() - start)

    start = time.perf_counter()
    probe_set = start_probe_set(
        datasets=["large"], kind="pope", split=split, images=500, per_image=3, seed=0,
        reference=True, out_dir=out, enqueue=False,
    )  # fmt: skip
    probe_set = build_probe_set(probe_set_id=probe_set.pk, progress_callback=seen_phase)
    seconds = time.perf_counter() - start
    return {
        "split": split,
        "seconds": seconds,
        "probes": probe_set.counts["probes"],
        "yes": probe_set.counts["yes"],
        "candidates": probe_set.counts["candidate_images"],
        "vocabulary": probe_set.manifest["vocabulary_size"],
        "sha256": probe_set.content_sha256,
        # When each phase began, seconds from the start (reading, sampling, checking, ...).
        "phase_starts": {k: round(v, 2) for k, v in phases.items()},
    }


def run_child(url: str, split: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fgam-bench-probes-") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.bench.bench_probes", "--child", split, "--out", out],
            cwd=ROOT,
            env={**os.environ, "BENCH_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode:
        sys.exit(f"build {split} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--child", choices=SPLITS)
    parser.add_argument("--out")
    parser.add_argument("--no-load", action="store_true", help="reuse the loaded database")
    args = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if args.child:
        setup_django(url)
        result = child_build(args.child, args.out)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["peak_rss_mb"] = usage.ru_maxrss / 1024
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(result))
        return
    if not args.no_load:
        recreate_database(url)
        setup_django(url)
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        regions = generate("large", args.images, args.per_image)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")
        print(f"loaded {regions:,} regions over {args.images:,} images (COPY + VACUUM ANALYZE) "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
    results = [run_child(url, split) for split in SPLITS]
    for r in results:
        verdict = "ok" if r["seconds"] <= TARGET_S else f"OVER the {TARGET_S:.0f} s target"
        print(
            f"POPE {r['split']:11s}: {r['probes']:,} probes ({r['yes']:,} yes) from "
            f"{r['candidates']:,} candidate images, vocabulary {r['vocabulary']}, in "
            f"{r['seconds']:5.2f} s ({verdict}); peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"{r['cpu_s']:.1f} CPU s, load average {r['load_average']:.1f}; phases began at "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["phase_starts"].items())
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
