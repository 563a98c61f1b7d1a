"""Export benchmark: 1,000,000 regions over 100,000 images from PostgreSQL, reference mode.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_bench_export \\
        .venv/bin/python -m tests.bench.bench_export [--images 100000] [--per-image 10]

The database named there is dropped, created and migrated on every run, so its name has to
contain "bench". Rows are generated with ``COPY`` (``webapp.core.importing.bulk``): a
dataset of ``images`` images with ``per-image`` accepted regions each, and a tenth of it.

After generation the database is ``VACUUM (ANALYZE)``-ed, as autovacuum would have done to a
live one. Each measurement runs in a fresh child process, so its peak RSS (``ru_maxrss``) is
its own:

- the export service (``cut_version`` + ``export_version``, reference mode) over the small
  and the large dataset: regions/s and peak RSS, and the ratio of the two peaks;
- the naive baseline over the same rows: ``list(queryset.values())`` then ``json.dump``.

Each line also gives the child's CPU seconds and the load average when it ended: the machine
this is developed on is shared, so compare export and baseline of the same run.

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

from tests.bench.database import recreate_database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_bench_export"


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def _defaults(model, given: tuple[str, ...], now) -> dict:
    out = {}
    for f in model._meta.concrete_fields:
        if f.primary_key or f.attname in given:
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            out[f.attname] = now
        else:
            out[f.attname] = f.get_default()
    return out


def generate(name: str, images: int, per_image: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from webapp.catalog.models import Dataset, Image
    from webapp.core.importing.bulk import insert_rows
    from webapp.regions.models import Region

    now = timezone.now()
    with transaction.atomic():
        dataset = Dataset.objects.create(name=name)
        columns = ("dataset_id", "sha256", "width", "height", "uri", "captions")
        rows = (
            (
                dataset.pk,
                hashlib.sha256(f"{name}-{i}".encode()).hexdigest(),
                640,
                480,
                f"https://images.example.org/{name}/{i:08d}.jpg",
                [f"scene {i} with a few objects"],
            )
            for i in range(images)
        )
        insert_rows(Image, columns, rows, _defaults(Image, columns, now), fresh=True)
        ids = list(Image.objects.filter(dataset=dataset).values_list("id", flat=True))
        columns = (
            "image_id",
            "image_width",
            "image_height",
            "x0",
            "y0",
            "x1",
            "y1",
            "phrase",
            "caption",
            "origin",
            "score",
            "status",
        )
        rows = (
            (
                image_id,
                640,
                480,
                10.0 + k,
                20.5 + k,
                200.25 + k,
                300.0 + k,
                f"object {k}",
                f"a small object number {k} near the {k % 3} corner",
                "detector",
                0.5 + k / 100,
                "accepted",
            )
            for image_id in ids
            for k in range(per_image)
        )
        insert_rows(Region, columns, rows, _defaults(Region, columns, now), fresh=True)


def child_export(dataset: str, out: str) -> dict:
    from webapp.exports.services import cut_version, export_version

    start = time.perf_counter()
    version = cut_version(datasets=[dataset], reference=True, out_dir=out, enqueue=False)
    version = export_version(version_id=version.pk)
    seconds = time.perf_counter() - start
    regions = version.counts["stage1_regions"]
    return {
        "regions": regions,
        "seconds": seconds,
        "sha256": version.content_sha256,
        "size_bytes": version.size_bytes,
    }


def child_baseline(dataset: str, out: str) -> dict:
    from webapp.regions.models import Region

    start = time.perf_counter()
    rows = list(
        Region.objects.filter(image__dataset__name=dataset, status="accepted")
        .order_by("image__sha256", "id")
        .values(
            "id",
            "x0",
            "y0",
            "x1",
            "y1",
            "phrase",
            "caption",
            "origin",
            "score",
            "image__sha256",
            "image__width",
            "image__height",
            "image__uri",
        )
    )
    with open(Path(out) / "naive.json", "w") as handle:
        json.dump(rows, handle, default=str)
    return {"regions": len(rows), "seconds": time.perf_counter() - start}


def run_child(url: str, mode: str, dataset: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fgam-bench-export-") as out:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.bench.bench_export",
                "--child",
                mode,
                "--dataset",
                dataset,
                "--out",
                out,
            ],
            cwd=ROOT,
            env={**os.environ, "BENCH_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode:
        sys.exit(f"{mode} {dataset} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["regions_per_s"] = result["regions"] / result["seconds"]
    result["load_average"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--child", choices=("export", "baseline"))
    parser.add_argument("--dataset")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if args.child:
        setup_django(url)
        fn = child_export if args.child == "export" else child_baseline
        result = fn(args.dataset, args.out)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["peak_rss_mb"] = usage.ru_maxrss / 1024
        # CPU seconds of this process (database server time is not in it): on a shared, loaded
        # machine this moves far less than wall time, so it says more about the code.
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(result))
        return
    recreate_database(url)
    setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    generate("small", args.images // 10, args.per_image)
    generate("large", args.images, args.per_image)
    print(f"generated {args.images * 11 // 10:,} images in {time.perf_counter() - start:.1f} s")
    # As a live database would be: statistics gathered and hint bits set by autovacuum.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
    results = {}
    for mode in ("export", "baseline"):
        for dataset in ("small", "large"):
            r = run_child(url, mode, dataset)
            results[f"{mode}_{dataset}"] = r
            print(
                f"{mode:8s} {dataset:5s}: {r['regions']:>9,} regions in {r['seconds']:6.1f} s"
                f" = {r['regions_per_s']:>9,.0f} regions/s, peak RSS {r['peak_rss_mb']:6.0f} MB,"
                f" {r['cpu_s']:5.1f} CPU s (load average {r['load_average']:.1f})"
            )
    ratio = results["export_large"]["peak_rss_mb"] / results["export_small"]["peak_rss_mb"]
    print(f"export peak RSS large/small: {ratio:.2f}")
    speedup = results["export_large"]["regions_per_s"] / results["baseline_large"]["regions_per_s"]
    print(
        f"export / naive baseline at 1M regions: {speedup:.2f}x (wall), "
        f"{results['baseline_large']['cpu_s'] / results['export_large']['cpu_s']:.2f}x (CPU)"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
