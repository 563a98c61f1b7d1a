"""Import benchmark: a generated COCO file of 5,000 images and 50,000 boxes into PostgreSQL.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_bench \\
        .venv/bin/python -m tests.bench.bench_import [--images 5000] [--boxes 50000]

The database named there is dropped, created and migrated on every run, so it must be a
dedicated one: the name has to contain "bench". Images (tiny real PNGs) are generated once
into ``var/bench/`` and reused; stored bytes go to a temporary media folder under ``var/bench/``.

Two figures are timed in the same run:

- the real service, ``import_coco``, end to end: parsing, reading, hashing and decoding every
  image, storing the bytes, and the bulk writes; and its region-write phase alone;
- a naive baseline: one ``Region(...).save()`` per region (boxes fitted the same way), inside
  one transaction, for the first ``--baseline`` regions into another dataset whose image rows
  are made beforehand and not timed. Its rate is extrapolated to all the regions.

Thumbnail tasks are not run: they are worker work after the import commits, so the enqueue is
replaced by a no-op here. Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

from tests.bench.database import recreate_database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_bench"
WIDTH, HEIGHT = 64, 48


def make_images(folder: Path, count: int) -> None:
    """Distinct 64x48 PNGs, written once and kept for the next run."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        path = folder / f"{i:012d}.png"
        if not path.exists():
            picture = Image.new("RGB", (WIDTH, HEIGHT), (i % 256, i // 256 % 256, i // 65536))
            picture.putpixel((i % WIDTH, i % HEIGHT), (255, 255, 255))
            picture.save(path)


def make_coco(path: Path, images: int, boxes: int) -> dict:
    """Boxes spread evenly over the images; one in twenty spills a pixel and gets clipped."""
    rng = random.Random(0)
    data: dict = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.png", "width": WIDTH, "height": HEIGHT}
            for i in range(1, images + 1)
        ],
        "categories": [{"id": c, "name": f"thing {c}"} for c in range(1, 81)],
        "annotations": [],
    }
    for n in range(1, boxes + 1):
        w, h = rng.randint(4, 30), rng.randint(4, 20)
        x, y = rng.randint(0, WIDTH - w), rng.randint(0, HEIGHT - h)
        if n % 20 == 0:
            x = -1
        data["annotations"].append(
            {
                "id": n,
                "image_id": (n - 1) % images + 1,
                "category_id": rng.randint(1, 80),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    path.write_text(json.dumps(data))
    return data


def baseline(data: dict, imported_dataset, count: int) -> float:
    """Seconds for ``count`` one-row ``Region.save()`` calls; returns the elapsed time."""
    from django.conf import settings
    from django.db import transaction

    from training.geometry import fit_box, from_xywh
    from webapp.catalog.models import Dataset, Image
    from webapp.regions.models import Region

    target = Dataset.objects.create(name="baseline")
    Image.objects.bulk_create(
        Image(
            dataset=target,
            **{
                f: getattr(image, f)
                for f in (
                    "sha256",
                    "width",
                    "height",
                    "format",
                    "storage_path",
                    "file_name",
                    "source",
                    "source_id",
                )
            },
        )
        for image in imported_dataset.images.all()
    )
    images = {image.source_id: image for image in target.images.all()}
    names = {str(c["id"]): c["name"] for c in data["categories"]}
    started = time.perf_counter()
    with transaction.atomic():
        for annotation in data["annotations"][:count]:
            image = images[str(annotation["image_id"])]
            fit = fit_box(
                from_xywh(*annotation["bbox"]),
                image.width,
                image.height,
                settings.FGAM_BOX_CLIP_TOLERANCE,
            )
            x0, y0, x1, y1 = fit.box
            name = names[str(annotation["category_id"])]
            Region(
                image=image,
                image_width=image.width,
                image_height=image.height,
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                phrase=name,
                caption=name,
                origin="gt",
                source_key=f"coco:ann:{annotation['id']}",
            ).save()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--boxes", type=int, default=50000)
    parser.add_argument("--baseline", type=int, default=5000, help="regions saved one by one")
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    # Media goes where the app keeps it by default (under var/), not to /tmp: on these
    # machines /tmp is a much slower file system for many small files in many folders.
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    media = Path(tempfile.mkdtemp(prefix="media-", dir=ROOT / "var" / "bench"))
    os.environ.update(DATABASE_URL=url, MEDIA_ROOT=str(media))
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from webapp.catalog import services
    from webapp.catalog.importing import import_coco
    from webapp.catalog.models import Dataset

    call_command("migrate", verbosity=0)
    services.enqueue_thumbnails = lambda ids, **kw: 0  # worker work, not import work

    cache = ROOT / "var" / "bench"
    folder = cache / f"images-{WIDTH}x{HEIGHT}"
    make_images(folder, args.images)
    data = make_coco(cache / "instances_bench.json", args.images, args.boxes)

    try:
        started = time.perf_counter()
        report = import_coco(
            dataset="bench", instances=cache / "instances_bench.json", images=folder
        )
        total = time.perf_counter() - started
        saved = baseline(data, Dataset.objects.get(name="bench"), args.baseline)
    finally:
        shutil.rmtree(media, ignore_errors=True)

    regions = report.regions_new
    end_to_end = regions / total
    write_rate = regions / report.timings["write_s"]
    naive = args.baseline / saved
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    machine = platform.processor() or platform.machine()
    print(f"machine: {platform.node()} {machine}, {os.cpu_count()} CPUs, PostgreSQL {server}")
    print(
        f"import_coco: {report.images_new} images and {regions} regions "
        f"({report.clipped_boxes} boxes clipped) in {total:.2f} s"
    )
    print("  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items()))
    print(
        f"baseline: {args.baseline} Region.save() calls, one transaction, {saved:.2f} s; "
        f"extrapolated to {regions} regions: {regions / naive:.1f} s"
    )
    for label, rate in (("end to end", end_to_end), ("write phase", write_rate)):
        verdict = "met" if rate >= 50_000 and rate / naive >= 20 else "MISSED"
        print(
            f"{label:>12}: {rate:9,.0f} regions/s, {rate / naive:5.1f}x the baseline "
            f"({naive:,.0f} regions/s); target >= 50,000/s and >= 20x: {verdict}"
        )


if __name__ == "__main__":
    main()
