"""Pipeline overhead: a pseudo-label run through Celery, Redis and PostgreSQL against calling
the detector adapter directly in a loop on the same images. Target: at least 0.8.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_bench_pipeline \\
        .venv/bin/python -m tests.bench.bench_pipeline [--images 480] [--batch-size 32]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"); Redis database 14 is flushed. Images are drawn scenes of one size, stored in a
temporary media folder; the detector is the tiny random Grounding DINO of the worker tests.

- direct: in this process, per batch of ``--batch-size``: read the stored bytes, decode to RGB,
  ``detector.detect`` with the run's parameters. The model is loaded before timing.
- pipeline: one real worker process (``-Q default,gpu``, concurrency 1, prefetch 1, the same
  torch threads) after a warm-up run that loads its model; timed from the call of
  ``start_pseudo_label_run`` until the run is recorded as finished: planning, the broker,
  claiming, reading and decoding, detection, the bulk region writes, the counters.

Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.database import recreate_database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_bench_pipeline"
REDIS_URL = "redis://127.0.0.1:6379/14"
LABELS = ["dog", "cat", "red car", "tree"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", default="320x240", help="image width x height")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    media = Path(tempfile.mkdtemp(prefix="fgam-bench-pipeline-"))
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)
    env = {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(media / "media"),
        "FGAM_S3_BUCKET": "",
        "SECRET_KEY": "bench-only-secret-key",
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "FGAM_DEVICE": "cpu",
        "OMP_NUM_THREADS": threads,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()
    import redis
    import torch
    from django.core.management import call_command

    torch.set_num_threads(int(threads))
    redis.Redis.from_url(REDIS_URL).flushdb()
    call_command("migrate", verbosity=0)

    from tests.catalog.factories import DatasetFactory
    from tests.jobs.conftest import stored_scene
    from webapp.catalog.models import Image
    from webapp.catalog.thumbnails import read_stored_bytes
    from webapp.jobs.models import Run
    from webapp.jobs.pseudo_label import decode_rgb, start_pseudo_label_run
    from webapp.regions.models import Region
    from workers.detection import DetectorParams
    from workers.grounding_dino import load_detector
    from workers.tiny_models import build_tiny_grounding_dino

    model = str(build_tiny_grounding_dino(media / "tiny-grounding-dino"))
    warmup = DatasetFactory(name="warmup")
    dataset = DatasetFactory(name="bench")
    for n in range(args.batch_size):
        stored_scene(warmup, 10_000 + n, (width, height))
    for n in range(args.images):
        stored_scene(dataset, n, (width, height))

    # --- direct ---------------------------------------------------------------------------
    params = DetectorParams(box_threshold=0.35, text_threshold=0.25, nms_iou=0.5)
    detector = load_detector(model, device="cpu", dtype="float32")
    images = list(Image.objects.filter(dataset=dataset).order_by("pk"))
    detector.detect([decode_rgb(read_stored_bytes(images[0]), max_pixels=10**9)], [LABELS], params)
    started = time.perf_counter()
    direct_found = 0
    for i in range(0, len(images), args.batch_size):
        batch = images[i : i + args.batch_size]
        pixels = [decode_rgb(read_stored_bytes(im), max_pixels=10**9) for im in batch]
        found = detector.detect(pixels, [LABELS] * len(batch), params)
        direct_found += sum(len(f) for f in found)
    direct_s = time.perf_counter() - started

    # --- pipeline -------------------------------------------------------------------------
    from webapp import celery_app

    celery_app.conf.update(broker_url=REDIS_URL, task_always_eager=False)
    log_path = media / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"),
                *("-Q", "default,gpu", "-n", "bench-pipeline@%h", "--loglevel", "WARNING"),
                *("--pool", "prefork", "--concurrency", "1", "--prefetch-multiplier", "1"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        options = {
            "model": model,
            "labels": LABELS,
            "batch_size": args.batch_size,
            "device": "cpu",
            "dtype": "float32",
        }

        def run_to_end(on) -> tuple[Run, float]:
            begun = time.perf_counter()
            run = start_pseudo_label_run(dataset=on, **options)
            while run.is_open:
                if worker.poll() is not None:
                    sys.exit(f"the worker exited:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.01)
                run.refresh_from_db()
            return run, time.perf_counter() - begun

        warm, warm_s = run_to_end(warmup)
        assert warm.status == Run.Status.SUCCEEDED, warm.errors
        run, pipeline_s = run_to_end(dataset)
        assert run.status == Run.Status.SUCCEEDED, run.errors
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)

    regions = Region.objects.filter(run=run).count()
    direct_rate = len(images) / direct_s
    pipeline_rate = run.total / pipeline_s
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {threads}, torch {torch.__version__}"
    )
    print(
        f"images: {len(images)} of {width}x{height}, batch {args.batch_size}, "
        f"labels {len(LABELS)}; warm-up run {warm_s:.2f}s"
    )
    print(
        f"direct adapter loop : {direct_rate:7.2f} images/s ({direct_s:.2f}s, "
        f"{direct_found} detections)"
    )
    print(
        f"Celery + PostgreSQL : {pipeline_rate:7.2f} images/s ({pipeline_s:.2f}s, "
        f"{regions} regions written, batch seconds {run.summary.get('batch_seconds')})"
    )
    ratio = pipeline_rate / direct_rate
    print(f"ratio               : {ratio:.3f} (target >= 0.8) {'OK' if ratio >= 0.8 else 'BELOW'}")
    shutil.rmtree(media, ignore_errors=True)


if __name__ == "__main__":
    main()
