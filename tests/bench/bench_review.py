"""Review benchmark: the review page, a save and "next image" with 1,000,000 regions in PostgreSQL.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_review_bench \\
        .venv/bin/python -m tests.bench.bench_review [--regions 1000000] [--per-image 200]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"). Regions are written by one ``INSERT ... SELECT`` over ``generate_series``: images of
``--per-image`` detector regions each, with scores spread around the run's box threshold.

Server time is the wall time of a request through Django's test client in this process: URL
routing, middleware (sessions, auth, CSRF), the view, its queries and the template, without a
network hop. Each figure is p50 / p95 over ``--samples`` requests, after a few warm-up ones,
with this process's CPU time beside it. Five figures: the review page of an image with
``--per-image`` regions, an accept, a caption rewrite (which runs the consistency checks), and
"next image" in image order and by uncertainty (both through the stored queue, ``QueueEntry``).
The state of the host (load average) is printed with them: on a shared machine it matters.
Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from tests.bench.database import django_for_pages

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_review_bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)]


def timed(samples: int, call) -> dict[str, float]:
    """Wall time p50 / p95 (the figure the targets are about) and, beside it, the CPU time
    this process spent: on a shared machine the gap between the two is time spent waiting
    for a core (or for PostgreSQL, which runs in its own processes)."""
    for _ in range(3):
        call(-1)
    times, cpu = [], []
    for n in range(samples):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call(n)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "cpu_p95_ms": round(percentile(cpu, 0.95), 2),
        "samples": samples,
    }


def seed(regions: int, per_image: int) -> tuple[int, list[int]]:
    from django.db import connection

    from webapp.catalog.models import Dataset, Image
    from webapp.jobs.models import Run

    dataset = Dataset.objects.create(name="bench")
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, parameters={"box_threshold": 0.35}
    )
    count = regions // per_image
    Image.objects.bulk_create(
        [
            Image(dataset=dataset, sha256=f"{n:064x}", width=640, height=480, file_name=f"{n}.png")
            for n in range(count)
        ],
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO regions_region (
                image_id, image_width, image_height, x0, y0, x1, y1, phrase, caption, score,
                origin, status, flagged, flag_reason, version, source_key, run_id,
                created_at, updated_at)
            SELECT i.id, 640, 480, (g %% 500), (g %% 400), (g %% 500) + 100, (g %% 400) + 60,
                   'object ' || (g %% 40), 'an object in the scene', ((g * 7919) %% 1000) / 1000.0,
                   'detector', 'pending', false, '', 1, '', %s, now(), now()
            FROM catalog_image i CROSS JOIN generate_series(1, %s) AS g
            WHERE i.dataset_id = %s
            """,
            [run.pk, per_image, dataset.pk],
        )
        cursor.execute("ANALYZE")
    return dataset.pk, list(Image.objects.order_by("pk").values_list("pk", flat=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--per-image", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    django_for_pages(url)
    from django.test import Client

    started = time.perf_counter()
    _, images = seed(args.regions, args.per_image)
    seeded_s = time.perf_counter() - started

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from webapp.regions.models import Region

    user = get_user_model().objects.create(username="bench")
    user.groups.add(Group.objects.get_or_create(name="annotator")[0])
    client = Client()
    client.force_login(user)

    def page(n: int) -> None:
        response = client.get(f"/review/images/{images[n % len(images)]}/")
        assert response.status_code == 200, response.status_code

    save_regions = list(
        Region.objects.filter(image_id__in=images[:10]).order_by("pk").values_list("pk", flat=True)
    )

    unsaved = iter(save_regions)

    def save(n: int) -> None:
        region = next(unsaved)
        response = client.post(
            f"/review/regions/{region}/action",
            {"action": "accept", "version": 1},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 200, response.status_code

    caption_regions = iter(
        Region.objects.filter(image_id__in=images[10:20])
        .order_by("pk")
        .values_list("pk", flat=True)
    )

    def save_caption(n: int) -> None:
        # A rewrite runs the consistency checks, unlike a status change.
        response = client.post(
            f"/review/regions/{next(caption_regions)}/action",
            {"action": "edit", "version": 1, "caption": f"the object on the left, take {n}"},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 200, response.status_code

    current = {"image": images[0]}

    def next_image(order: str):
        def call(n: int) -> None:
            response = client.post(f"/review/images/{current['image']}/next", {"order": order})
            assert response.status_code == 302, response.status_code
            current["image"] = int(response["Location"].split("/")[3])

        return call

    results = {
        "load_average_before": os.getloadavg(),
        "regions": Region.objects.count(),
        "images": len(images),
        "regions_per_image": args.per_image,
        "seed_s": round(seeded_s, 1),
        "review_page": timed(args.samples, page),
        "save": timed(min(args.samples, len(save_regions) - 3), save),
        "save_caption_with_lint": timed(min(args.samples, len(save_regions) - 3), save_caption),
        "next_image_by_image": timed(args.samples, next_image("image")),
        "next_image_by_uncertainty": timed(min(args.samples, 30), next_image("uncertainty")),
    }
    results["load_average_after"] = os.getloadavg()
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
