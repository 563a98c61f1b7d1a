"""Benchmark-job results in PostgreSQL: storing a run's answers, then the job page and the
wrong-answers list with its filters.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_answers_bench \\
        .venv/bin/python -m tests.bench.bench_benchmark_answers [--probes 9000] [--samples 50]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"). A probe set of ``--probes`` probes over a third as many images is written with the
real writer, and a scorer's run folder beside it (``predictions.jsonl`` answering at random
with the scripted texts of the tests, ``metrics.json`` from ``training.probes.metrics``);
``store_results`` (what a job does when the scorer exits) is timed, then page requests through
Django's test client (p50 / p95 after warm-ups). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench_review import timed
from tests.bench.database import django_for_pages

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_answers_bench"
OBJECTS = [f"object{n}" for n in range(80)]
TEXTS = ["Yes.", "no", "There is not one.", "Yes, there is.", "%$#@", "No."]


def write_run(root: Path, run: Path, probes: int) -> dict:
    from PIL import Image

    from training.probes.layout import Probe, ProbeSetWriter
    from training.probes.metrics import score

    rng = random.Random(0)
    written = []
    with ProbeSetWriter(root) as out:
        shas = []
        for n in range(max(1, probes // 3)):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 48), (n % 256, n // 256 % 256, 7)).save(buffer, "PNG")
            sha = f"{n:064x}"
            out.add_image(sha, buffer.getvalue(), "png")
            shas.append(sha)
        for n in range(probes):
            obj = OBJECTS[n % len(OBJECTS)]
            answer = "yes" if n % 2 == 0 else "no"
            probe = Probe(
                id=str(n), image=shas[n // 3], question=f"Is there a {obj} in the image?",
                answer=answer, kind="pope", split=("random", "popular", "adversarial")[n % 3],
                object=obj, boxes=[[4.0, 4.0, 30.0, 40.0]] if answer == "yes" else None,
            )  # fmt: skip
            out.add(probe)
            written.append(probe)
        manifest = out.finish({"id": "bench", "kind": "pope", "split": "random"}, lmms_eval=False)
    run.mkdir(parents=True)
    predictions = [{"id": p.id, "answer": rng.choice(TEXTS), "latency_ms": 5} for p in written]
    with (run / "predictions.jsonl").open("w") as handle:
        for row in predictions:
            handle.write(json.dumps(row) + "\n")
    metrics = {"splits": score(written, predictions, resamples=200), "n": probes}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=9000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    django_for_pages(url)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client

    from webapp.benchmarks.models import BenchmarkJob
    from webapp.benchmarks.runner import store_results
    from webapp.probes.models import ProbeSet

    with tempfile.TemporaryDirectory() as tmp:
        root, run = Path(tmp) / "probes", Path(tmp) / "run"
        manifest = write_run(root, run, args.probes)
        probe_set = ProbeSet.objects.create(
            set_id="bench", kind="pope", split="random", status="ready", path=str(root),
            counts=manifest["counts"], content_sha256=manifest["content_sha256"],
        )  # fmt: skip
        job = BenchmarkJob.objects.create(
            probe_set=probe_set, model_spec="bench", status="done", out_dir=str(run)
        )
        started = time.perf_counter()
        store_results(job)
        store_s = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

        user = get_user_model().objects.create(username="bench")
        user.groups.add(Group.objects.get_or_create(name="annotator")[0])
        client = Client()
        client.force_login(user)

        def page(url: str):
            def call(n: int) -> None:
                assert client.get(url).status_code == 200

            return call

        answers = f"/benchmarks/{job.pk}/answers/"
        results = {
            "probes": args.probes,
            "answers_stored": job.answers.count(),
            "store_results_s": round(store_s, 2),
            "job_page": timed(args.samples, page(f"/benchmarks/{job.pk}/")),
            "wrong_answers_page": timed(args.samples, page(answers)),
            "filtered_split_object_pope": timed(
                args.samples, page(answers + "?parser=pope&split=popular&object=object7")
            ),
            "deep_page_after_8000": timed(args.samples, page(answers + "?after=8000")),
        }
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
