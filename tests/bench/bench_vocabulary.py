"""Vocabulary benchmark: names and counts over 1,000,000 accepted regions in PostgreSQL.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_vocab_bench \\
        .venv/bin/python -m tests.bench.bench_vocabulary [--regions 1000000] [--per-image 20]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"). Regions are written by one ``INSERT ... SELECT`` over ``generate_series``, their
phrases drawn from a list of raw spellings (plurals, articles, capitals) that normalise to
fewer names, with two aliases. Figures, p50 / p95 over ``--samples`` calls after one warm-up:
``vocabulary_counts`` (the query grouped by phrase, the normalising and the distinct images
per name), the same with ``count_images=False`` (the first query alone), the vocabulary page
through Django's test client, and marking every image with accepted regions exhaustively
reviewed (``mark_images``, as ``mark_reviewed --all-with-accepted``), then clearing them again.
Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tests.bench.bench_review import timed
from tests.bench.database import django_for_pages

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_vocab_bench"
NOUNS = ["car", "person", "dog", "tree", "bus", "bench", "knife", "glass", "berry", "box"]
SPELLINGS = [
    form
    for noun in NOUNS
    for form in (noun, f"a {noun}", f"The {noun.title()}", f"{noun}s", f"red {noun}")
] + ["man", "men", "woman", "women", "people", "children", "Child", "glasses", "jeans"]


def seed(regions: int, per_image: int) -> int:
    from django.db import connection

    from webapp.catalog.models import Dataset, Image

    dataset = Dataset.objects.create(name="bench")
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
                origin, status, flagged, flag_reason, version, source_key, created_at, updated_at)
            SELECT i.id, 640, 480, 10, 10, 100, 100,
                   (%s::text[])[1 + (g * 7919 + i.id) %% %s], '', NULL,
                   'gt', 'accepted', false, '', 1, '', now(), now()
            FROM catalog_image i CROSS JOIN generate_series(1, %s) AS g
            WHERE i.dataset_id = %s
            """,
            [SPELLINGS, len(SPELLINGS), per_image, dataset.pk],
        )
        cursor.execute("ANALYZE")
    return dataset.pk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--per-image", type=int, default=20)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    django_for_pages(url)
    from django.test import Client

    started = time.perf_counter()
    dataset_id = seed(args.regions, args.per_image)
    seeded_s = time.perf_counter() - started

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from webapp.catalog.models import Dataset, Image
    from webapp.catalog.vocabulary import set_alias, vocabulary_counts
    from webapp.regions.models import Region
    from webapp.regions.review_marks import images_with_accepted, mark_images

    dataset = Dataset.objects.get(pk=dataset_id)
    set_alias(dataset=dataset, phrase="men", name="person")
    set_alias(dataset=dataset, phrase="woman", name="person")
    user = get_user_model().objects.create(username="bench")
    user.groups.add(Group.objects.get_or_create(name="curator")[0])
    client = Client()
    client.force_login(user)
    rows = vocabulary_counts(dataset)

    def counts(n: int) -> None:
        vocabulary_counts(dataset)

    def names_only(n: int) -> None:
        vocabulary_counts(dataset, count_images=False)

    def page(n: int) -> None:
        response = client.get("/datasets/bench/vocabulary")
        assert response.status_code == 200, response.status_code

    images = Image.objects.filter(dataset=dataset)
    marked: dict[str, float] = {}
    start = time.perf_counter()
    done = mark_images(
        images=images_with_accepted(images), image_ids=None, reviewed=True, user=user
    )
    marked["mark_all_with_accepted_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    mark_images(images=images, image_ids=None, reviewed=False, user=user)
    marked["clear_all_s"] = round(time.perf_counter() - start, 2)

    results = {
        "load_average_before": os.getloadavg(),
        "regions": Region.objects.count(),
        "distinct_phrases": len(SPELLINGS),
        "names": len(rows),
        "top_names": rows[:3],
        "seed_s": round(seeded_s, 1),
        "vocabulary_counts": timed(args.samples, counts),
        "vocabulary_counts_without_images": timed(args.samples, names_only),
        "vocabulary_page": timed(args.samples, page),
        "images_marked": done.changed,
        **marked,
    }
    results["load_average_after"] = os.getloadavg()
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
