"""Load test of the assignment endpoint: 30 raters at once against gunicorn + PostgreSQL.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_eval_bench \\
        .venv/bin/python -m tests.bench.bench_assignment [--raters 30] [--items 200]

The database named there is dropped, created and migrated (its name must contain "bench").
A round of ``--items`` items x 3 systems is opened with 3 seats per item. Each rater is a
thread with its own HTTP connection on loopback doing what the API client of a rater does,
until the round has nothing left for them: ``POST /api/evaluation/assignments/next/`` (the
assignment endpoint, timed), then ``POST .../ratings/`` for all responses of the item. Each
rater first reads the round list once (warming gunicorn's threads and imports, not timed); a
barrier then starts all raters at the same moment, so their first claims collide.

At the end the round is checked: every item has exactly 3 done seats with 3 distinct raters,
no rater rated an item twice, no item has more than 3 seats taken. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from tests.bench.database import recreate_database

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_eval_bench"


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "assignment-bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def seed(items: int, raters: int) -> tuple[int, list[str]]:
    """An open round and the raters' API tokens."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from webapp.catalog.models import Dataset, Image
    from webapp.evaluation import services
    from webapp.evaluation.models import EvalItem, Response, System

    dataset = Dataset.objects.create(name="bench")
    images = Image.objects.bulk_create(
        Image(dataset=dataset, sha256=f"{n:064x}", width=640, height=480) for n in range(items)
    )
    round_ = services.create_round(name="bench round", seed=1)
    systems = [System.objects.create(round=round_, name=f"system {n}") for n in range(3)]
    rows = EvalItem.objects.bulk_create(
        EvalItem(round=round_, key=str(n), image=image, question=f"Q{n}?", position=n)
        for n, image in enumerate(images)
    )
    Response.objects.bulk_create(
        Response(item=item, system=system, text=f"answer {n} to question {item.key}")
        for item in rows
        for n, system in enumerate(systems)
    )
    services.open_round(round_=round_)
    group = Group.objects.get_or_create(name="rater")[0]
    tokens = []
    for n in range(raters):
        user = get_user_model().objects.create(username=f"rater{n}")
        user.groups.add(group)
        tokens.append(Token.objects.create(user=user).key)
    return round_.pk, tokens


class Rater(threading.Thread):
    def __init__(self, port: int, token: str, round_id: int, barrier: threading.Barrier):
        super().__init__(daemon=True)
        self.port, self.round_id, self.barrier = port, round_id, barrier
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.claim_ms: list[float] = []
        self.rate_ms: list[float] = []
        self.rated: list[int] = []
        self.errors: list[str] = []

    def call(self, path: str, body: dict) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - started) * 1000

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        # Warm up (imports, connections) outside the measurement, then start all at once.
        self.conn.request("GET", "/api/evaluation/rounds/", headers=self.headers)
        self.conn.getresponse().read()
        self.barrier.wait()
        while True:
            try:
                status, data, ms = self.call(
                    "/api/evaluation/assignments/next/", {"round": self.round_id}
                )
                self.claim_ms.append(ms)
                if status == 204:
                    return
                if status != 200:
                    self.errors.append(f"next: HTTP {status} {data[:200]!r}")
                    return
                item = json.loads(data)
                scores = {"localization": 4, "coherence": 3, "quality": 4}
                ratings = [{"slot": r["slot"], "scores": scores} for r in item["responses"]]
                status, data, ms = self.call(
                    f"/api/evaluation/assignments/{item['id']}/ratings/", {"ratings": ratings}
                )
                self.rate_ms.append(ms)
                if status != 200:
                    self.errors.append(f"ratings: HTTP {status} {data[:200]!r}")
                    return
                self.rated.append(item["id"])
            except OSError as error:
                self.errors.append(repr(error))
                return


def check(round_id: int) -> dict:
    from django.db.models import Count

    from webapp.evaluation.models import Assignment

    seats = Assignment.objects.filter(round_id=round_id)
    per_item = (
        seats.filter(status="done")
        .values("item_id")
        .annotate(n=Count("pk"), raters=Count("rater_id", distinct=True))
    )
    over = seats.exclude(rater=None).values("item_id").annotate(n=Count("pk")).filter(n__gt=3)
    twice = seats.exclude(rater=None).values("item_id", "rater_id").annotate(n=Count("pk"))
    return {
        "items_complete": sum(1 for row in per_item if row["n"] == row["raters"] == 3),
        "items_over_assigned": over.count(),
        "rater_item_pairs_twice": twice.filter(n__gt=1).count(),
        "seats_not_done": seats.exclude(status="done").count(),
    }


def in_process(round_id: int) -> dict:
    """The same round again without HTTP, one thread: the claim service's own cost.

    Every seat is reset to free and the raters take turns (claim, then rate) until done.
    """
    from django.contrib.auth import get_user_model

    from webapp.evaluation.assignment import RatingInput, claim_next, submit_ratings
    from webapp.evaluation.models import Assignment, Rating, Round

    Rating.objects.filter(assignment__round_id=round_id).delete()
    Assignment.objects.filter(round_id=round_id).update(
        status="open", rater=None, leased_until=None, order=[], claimed_at=None, done_at=None
    )
    round_ = Round.objects.get(pk=round_id)
    raters = list(get_user_model().objects.filter(username__startswith="rater"))
    scores = {"localization": 4, "coherence": 3, "quality": 4}
    claim_ms: list[float] = []
    active = list(raters)
    while active:
        for user in list(active):
            started = time.perf_counter()
            seat = claim_next(round_, user)
            claim_ms.append((time.perf_counter() - started) * 1000)
            if seat is None:
                active.remove(user)
                continue
            inputs = [RatingInput(slot=s, scores=scores) for s in range(1, len(seat.order) + 1)]
            submit_ratings(assignment_id=seat.pk, rater=user, inputs=inputs)
    return {
        "in_process_claims": len(claim_ms),
        "in_process_claim_p50_ms": percentile(claim_ms, 0.5),
        "in_process_claim_p95_ms": percentile(claim_ms, 0.95),
        "in_process_" + "items_complete": check(round_id)["items_complete"],
    }


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))], 2) if ordered else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raters", type=int, default=30)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--port", type=int, default=8775)
    parser.add_argument(
        "--in-process", action="store_true", help="then time the claim service without HTTP"
    )
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    round_id, tokens = seed(args.items, args.raters)

    env = dict(os.environ, DATABASE_URL=url, ALLOWED_HOSTS="127.0.0.1", DEBUG="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{args.port}",
         "-w", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", args.port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.1)
        barrier = threading.Barrier(args.raters)
        raters = [Rater(args.port, token, round_id, barrier) for token in tokens]
        started = time.monotonic()
        for rater in raters:
            rater.start()
        for rater in raters:
            rater.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    claims = [ms for r in raters for ms in r.claim_ms]
    rates = [ms for r in raters for ms in r.rate_ms]
    per_rater = [len(r.rated) for r in raters]
    errors = [e for r in raters for e in r.errors]
    result = {
        "raters": args.raters,
        "items": args.items,
        "seats": args.items * 3,
        "gunicorn": f"{args.workers} workers x {args.threads} threads",
        "seconds": round(elapsed, 1),
        "claim_requests": len(claims),
        "claim_p50_ms": percentile(claims, 0.5),
        "claim_p95_ms": percentile(claims, 0.95),
        "claim_max_ms": percentile(claims, 1.0),
        "rating_p95_ms": percentile(rates, 0.95),
        "items_rated_per_rater_min_max": [min(per_rater), max(per_rater)],
        "items_rated_per_rater_stdev": round(statistics.pstdev(per_rater), 2),
        "errors": len(errors),
        "error_samples": errors[:5],
        **check(round_id),
    }
    if args.in_process:
        result |= in_process(round_id)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
