"""Trajectory editor benchmark: JSONL import, the editor page, a save, and "next" in PostgreSQL.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_traj_bench \\
        .venv/bin/python -m tests.bench.bench_trajectory_editor \\
        [--trajectories 20000] [--samples 100]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"). ``--trajectories`` trajectories of 3 steps each (and one of 30 steps) are imported
through ``import_trajectories`` from a generated JSONL file; the import's wall time gives the
throughput. Server times are p50 / p95 wall times of requests through Django's test client in
this process (routing, middleware, view, queries, template; no network hop), after warm-ups.
Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench_review import timed
from tests.bench.database import django_for_pages

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_traj_bench"
IMAGES = 1000


def write_jsonl(path: Path, trajectories: int) -> None:
    """3 steps per trajectory over ``IMAGES`` images; trajectory "long" has 30."""
    with open(path, "w", encoding="utf-8") as out:
        for t in range(trajectories):
            image = f"{t % IMAGES:064x}"
            for k in range(3):
                out.write(json.dumps({
                    "trajectory": f"t{t}", "step": k, "image": image,
                    "question": f"Where is object {t % 40} relative to the tree?",
                    "response": f"Object {t % 40} is {'right' if k == 0 else 'left'} of the tree"
                                f" and it is {'red' if k < 2 else 'blue'}.",
                    "feedback": "It is left of the tree and blue." if k < 2
                                else "No further corrections needed.",
                    "target": None, "error_types": ["spatial"] if k == 0 else [],
                }) + "\n")  # fmt: skip
        for k in range(30):
            out.write(json.dumps({
                "trajectory": "long", "step": k, "image": f"{0:064x}", "question": "Long?",
                "response": f"Answer number {k} with a few more words in it.",
                "feedback": f"Feedback number {k}.", "target": None,
            }) + "\n")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trajectories", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    django_for_pages(url)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client

    from webapp.catalog.models import Dataset, Image
    from webapp.trajectories.importing import import_trajectories
    from webapp.trajectories.models import Trajectory

    dataset = Dataset.objects.create(name="bench")
    Image.objects.bulk_create(
        Image(dataset=dataset, sha256=f"{n:064x}", width=640, height=480) for n in range(IMAGES)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sft.jsonl"
        write_jsonl(path, args.trajectories)
        started = time.perf_counter()
        report = import_trajectories(dataset="bench", file=path)
        import_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    user = get_user_model().objects.create(username="bench")
    user.groups.add(Group.objects.get_or_create(name="annotator")[0])
    client = Client()
    client.force_login(user)
    short = Trajectory.objects.filter(source_key="import:t0").values_list("pk", flat=True)[0]
    long = Trajectory.objects.filter(source_key="import:long").values_list("pk", flat=True)[0]

    def page(pk: int):
        def call(n: int) -> None:
            assert client.get(f"/trajectories/{pk}/").status_code == 200

        return call

    version = {"v": 1}

    def save(n: int) -> None:
        response = client.post(
            f"/trajectories/{short}/edit",
            {"action": "response", "k": 1, "text": f"Object 0 is left, take {n}.",
             "version": version["v"]},
            HTTP_HX_REQUEST="true",
        )  # fmt: skip
        assert response.status_code == 200, response.status_code
        version["v"] += 1

    current = {"pk": short}

    def next_trajectory(n: int) -> None:
        response = client.post(f"/trajectories/{current['pk']}/next")
        assert response.status_code == 302, response.status_code
        current["pk"] = int(response["Location"].split("/")[2])

    results = {
        "trajectories": Trajectory.objects.count(),
        "import_s": round(import_s, 2),
        "import_trajectories_per_s": round(report.notes["trajectories new"] / import_s),
        "editor_page_3_steps": timed(args.samples, page(short)),
        "editor_page_30_steps": timed(args.samples, page(long)),
        "save_answer": timed(args.samples, save),
        "next_trajectory": timed(args.samples, next_trajectory),
    }
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
