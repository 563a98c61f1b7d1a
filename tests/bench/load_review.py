"""Load test: simulated annotators against gunicorn + PostgreSQL, then a lost-update check.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_load_bench \\
        .venv/bin/python -m tests.bench.load_review [--annotators 50] [--seconds 60]

The database named there is dropped, created and migrated (its name must contain "bench").
Each annotator is a thread with its own HTTP connection on loopback doing what the review page
does: POST accept / reject, caption edits and box resizes with the version it last saw, to the
same htmx endpoints. A third of the actions go to a few shared "hot" images, so annotators
collide. A 409 is a correct answer (the client then reads the region again and goes on); any
other status is an error.

Lost updates: every acknowledged action (200) is logged with the version the server answered.
Per region the log is replayed in version order from the seeded state; the result must equal
the final database row, and no version may have been acknowledged twice. Not collected by
pytest.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

from tests.bench.database import recreate_database

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_load_bench"
VERSION = re.compile(r'<tr id="row-(\d+)" data-region="\d+" data-version="(\d+)"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "load-bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def preloaded_application():
    """The WSGI application with every URL route (so every app's views) imported already.

    Gunicorn calls this once in its master (``--preload``) before forking the workers. Without
    it each worker imports the URL configuration on its first request, which pulls in torch and
    scipy through other apps' views: over ten seconds per worker on a busy 2-core machine, and
    the first minute of the run measured worker start-up instead of the review endpoints.
    """
    from django.core.wsgi import get_wsgi_application
    from django.urls import get_resolver

    application = get_wsgi_application()
    get_resolver().url_patterns  # noqa: B018 - imported for its side effect, before the fork
    return application


def seed(images: int, per_image: int, annotators: int) -> tuple[list[int], list[tuple[str, str]]]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore

    from webapp.catalog.models import Dataset, Image
    from webapp.regions.models import Region

    dataset = Dataset.objects.create(name="load")
    rows = Image.objects.bulk_create(
        Image(dataset=dataset, sha256=f"{n:064x}", width=640, height=480) for n in range(images)
    )
    Region.objects.bulk_create(
        Region(
            image=image, image_width=640, image_height=480, x0=10 + k, y0=10 + k,
            x1=100 + k, y1=90 + k, phrase="thing", caption="a thing", origin="detector",
            score=0.5,
        )
        for image in rows
        for k in range(per_image)
    )  # fmt: skip
    group = Group.objects.get_or_create(name="annotator")[0]
    sessions = []
    for n in range(annotators):
        user = get_user_model().objects.create(username=f"load{n}")
        user.groups.add(group)
        store = SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.create()
        sessions.append((store.session_key, secrets.token_hex(16)))
    region_ids = list(Region.objects.order_by("pk").values_list("pk", flat=True))
    return region_ids, sessions


class Annotator(threading.Thread):
    def __init__(self, n, port, session, regions, hot, deadline, log, lock):
        super().__init__(daemon=True)
        self.n, self.port, self.regions, self.hot = n, port, regions, hot
        self.deadline, self.log, self.lock = deadline, log, lock
        sessionid, csrf = session
        self.headers = {
            "Cookie": f"sessionid={sessionid}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "HX-Request": "true",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self.versions: dict[int, int] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.conflicts = 0
        self.rng = random.Random(n)

    def request(self, method: str, path: str, body: dict | None = None):
        conn = self.conn
        started = time.perf_counter()
        conn.request(method, path, body=urlencode(body or {}), headers=self.headers)
        response = conn.getresponse()
        data = response.read().decode()
        self.latencies.append((time.perf_counter() - started) * 1000)
        return response.status, data

    def current_version(self, region: int) -> int:
        status, data = self.request("GET", f"/api/regions/{region}/")
        if status != 200:
            self.errors.append(f"GET {region}: {status}")
            return 1
        return json.loads(data)["version"]

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        step = 0
        while time.monotonic() < self.deadline:
            step += 1
            region = self.rng.choice(self.hot if self.rng.random() < 0.33 else self.regions)
            version = self.versions.get(region) or self.current_version(region)
            kind = self.rng.choice(["accept", "reject", "edit", "box"])
            body: dict = {"action": kind, "version": version}
            if kind == "edit":
                body["caption"] = f"caption {self.n}-{step}"
            elif kind == "box":
                width = self.rng.randint(20, 300)
                body.update(x0=5, y0=5, x1=5 + width, y1=200)
            try:
                status, data = self.request("POST", f"/review/regions/{region}/action", body)
            except OSError as error:
                self.errors.append(f"{kind} {region}: {error}")
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            if status == 200:
                found = VERSION.search(data)
                new_version = int(found.group(2))
                self.versions[region] = new_version
                with self.lock:
                    self.log.append((region, new_version, kind, body))
            elif status == 409:
                self.conflicts += 1
                self.versions.pop(region, None)
            else:
                self.errors.append(f"{kind} {region}: HTTP {status}")


def replay(log, region_ids) -> dict[str, int]:
    from webapp.regions.models import Region

    by_region: dict[int, list] = {}
    for entry in log:
        by_region.setdefault(entry[0], []).append(entry)
    lost = duplicates = 0
    final = {r.pk: r for r in Region.objects.filter(pk__in=list(by_region))}
    for region_id, entries in by_region.items():
        entries.sort(key=lambda e: e[1])
        versions = [e[1] for e in entries]
        if len(set(versions)) != len(versions):
            duplicates += 1
        state = {"status": "pending", "caption": "a thing", "x1": None}
        for _, _, kind, body in entries:
            if kind in ("accept", "reject"):
                state["status"] = {"accept": "accepted", "reject": "rejected"}[kind]
            elif kind == "edit":
                state["caption"] = body["caption"]
            else:
                state["x1"] = float(body["x1"])
        row = final[region_id]
        same = (
            row.version == versions[-1]
            and row.status == state["status"]
            and row.caption == state["caption"]
            and (state["x1"] is None or row.x1 == state["x1"])
        )
        lost += not same
    return {"regions_touched": len(by_region), "lost_updates": lost, "duplicate_acks": duplicates}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-image", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    region_ids, sessions = seed(args.images, args.per_image, args.annotators)
    hot = region_ids[: 3 * args.per_image]  # three images everyone works on

    env = dict(os.environ, DATABASE_URL=url, ALLOWED_HOSTS="127.0.0.1", DEBUG="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tests.bench.load_review:preloaded_application()",
         "--preload", "-b", f"127.0.0.1:{args.port}",
         "-w", str(args.workers), "--threads", "4", "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        # The master imports the whole project before it listens (``--preload``): give it time.
        for _ in range(1800):
            if server.poll() is not None:
                sys.exit(f"gunicorn exited with {server.returncode} before it listened")
            try:
                http.client.HTTPConnection("127.0.0.1", args.port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.1)
        log: list = []
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds
        people = [
            Annotator(n, args.port, sessions[n], region_ids, hot, deadline, log, lock)
            for n in range(args.annotators)
        ]
        started = time.monotonic()
        for person in people:
            person.start()
        for person in people:
            person.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    latencies = [ms for p in people for ms in p.latencies]
    errors = [e for p in people for e in p.errors]
    ordered = sorted(latencies)
    result = {
        "annotators": args.annotators,
        "seconds": round(elapsed, 1),
        "gunicorn": f"{args.workers} workers x 4 threads",
        "requests": len(latencies),
        "acknowledged_actions": len(log),
        "conflicts_409": sum(p.conflicts for p in people),
        "actions_per_s": round(len(log) / elapsed, 1),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2) if ordered else None,
        "errors": len(errors),
        "error_samples": errors[:5],
        **replay(log, region_ids),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
