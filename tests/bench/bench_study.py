"""The tiny Table 2 study on CPU: its wall time, and the study machinery's overhead over
running the same jobs by hand.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/fgam_study_bench \\
        .venv/bin/python -m tests.bench.bench_study [--repeats 1]

The database named there is dropped, created and migrated on every run (its name must contain
"bench"). Tasks run eagerly in this process (no broker), so both runs do the same work in the
same order, one job at a time:

- **study**: ``create_study`` + ``start_study`` of Table 2 (4 arms: one Stage-1 run shared by
  two arms, two hybrid runs, one tower swap, four bench runs) on the tests' tiny models;
- **by hand**: the same eight runs started one after the other with ``start_training_job``,
  ``python -m training swap-tower`` and ``start_benchmark``, with the same configs (the
  study's resolved steps), the Stage-1 folder typed in as a curator would.

Overhead is reported two ways: the wall-time difference (dominated by run-to-run noise of the
trainers themselves), and the exclusive time spent inside the study's own code (creating and
planning the study, ``advance``, the job-finished callback), measured directly.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.database import recreate_database

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/fgam_study_bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    root = Path(tempfile.mkdtemp(prefix="bench-study-"))
    settings.FGAM_TRAINING_DIR = str(root / "runs")
    settings.FGAM_BENCHMARK_DIR = str(root / "benchmarks")
    models, version, probe_set = _fixtures(root)
    rows = []
    for n in range(args.repeats):
        study_s, machinery_s = run_study(f"bench-{n}", models, version, probe_set)
        hand_s = run_by_hand(f"bench-{n}")
        rows.append((study_s, machinery_s, hand_s))
        print(
            f"repeat {n}: study {study_s:.1f} s (machinery {machinery_s:.3f} s), "
            f"by hand {hand_s:.1f} s, wall difference {100 * (study_s - hand_s) / hand_s:+.1f}%, "
            f"machinery share {100 * machinery_s / study_s:.2f}%"
        )
    print(json.dumps({"repeats": rows}, indent=2))
    return 0


def _fixtures(root: Path):
    from tests.benchmarks.fixtures import write_probe_folder
    from tests.training.stage2.conftest import write_stage2_version
    from training.stage1.tiny import make_tiny_clip
    from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm
    from webapp.exports.models import DatasetVersion
    from webapp.probes.models import ProbeSet

    models = {
        "clip": make_tiny_clip(root / "clip", image_size=32),
        "llava": build_tiny_llava(root / "llava"),
        "rm": build_tiny_text_lm(root / "rm"),
    }
    folder = write_stage2_version(root / "version", images=12)
    manifest = json.loads((folder / "manifest.json").read_text())
    version = DatasetVersion.objects.create(
        name="study-v1", status="ready", storage="path", location=str(folder),
        content_sha256=manifest["content_sha256"], manifest=manifest,
    )  # fmt: skip
    probes = root / "probes" / "study-pope"
    manifest = write_probe_folder(probes, set_id="study-pope")
    probe_set = ProbeSet.objects.create(
        set_id="study-pope", kind="pope", split="random", status="ready", path=str(probes),
        content_sha256=manifest["content_sha256"], counts=manifest["counts"], manifest=manifest,
    )  # fmt: skip
    return models, version, probe_set


class Profile:
    """Exclusive time per category: a wrapped call's duration minus that of the wrapped calls
    nested in it. Eager tasks nest (a job's end advances the study, which runs the next job
    inside the same call stack), so only exclusive times add up to the wall time."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack: list[float] = []  # time taken by nested wrapped calls, per open call

    def wrap(self, category: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self.stack.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                nested = self.stack.pop()
                self.totals[category] = self.totals.get(category, 0.0) + took - nested
                if self.stack:
                    self.stack[-1] += took

        return timed


def run_study(name: str, models, version, probe_set) -> tuple[float, float]:
    """Wall time of the whole study, and the exclusive time of the study's own code (creating
    and planning it, ``advance``, the job-finished callback)."""
    from tests.studies.conftest import study_spec
    from webapp.benchmarks import runner
    from webapp.core import job_events
    from webapp.exports import training_jobs
    from webapp.studies import services, towers

    profile = Profile()
    patches = [
        (training_jobs, "run_training_job", "jobs"),
        (runner, "run_benchmark_job", "jobs"),
        (towers, "run_tower_step", "jobs"),
        (services, "advance", "study"),
        (services, "create_study", "study"),
    ]
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    for module, attr, category in patches:
        setattr(module, attr, profile.wrap(category, getattr(module, attr)))
    callbacks = list(job_events._CALLBACKS)
    job_events._CALLBACKS[:] = [profile.wrap("study", c) for c in callbacks]
    try:
        start = time.perf_counter()
        study = services.create_study(spec=study_spec(name, models, probe_set))
        services.start_study(study=study)
        wall = time.perf_counter() - start
    finally:
        for module, attr, function in saved:
            setattr(module, attr, function)
        job_events._CALLBACKS[:] = callbacks
    study.refresh_from_db()
    if study.status != "done":
        sys.exit(f"the study ended {study.status}: {study.error}")
    print(f"exclusive times: {profile.totals}")
    return wall, profile.totals.get("study", 0.0)


def run_by_hand(name: str) -> float:
    """The same runs as the study ``name``, started one by one without the study."""
    from django.conf import settings

    from webapp.benchmarks.services import start_benchmark
    from webapp.exports.training_jobs import start_training_job
    from webapp.studies.models import Study
    from webapp.studies.services import TRAINING_KINDS

    study = Study.objects.get(name=name)
    steps = list(study.steps.order_by("position"))
    folders: dict[str, str] = {}
    finals: dict[str, object] = {}

    def resolved(config: dict) -> dict:
        out = {}
        for key, value in config.items():
            if isinstance(value, str) and value.startswith("@step:"):
                ref, _, rest = value.removeprefix("@step:").partition("/")
                value = f"{folders[ref]}/{rest}"
            out[key] = value
        return out

    start = time.perf_counter()
    for step in steps:
        if step.kind in TRAINING_KINDS:
            job = start_training_job(
                version=study.version, kind=str(TRAINING_KINDS[step.kind]),
                config=resolved(step.config),
            )  # fmt: skip
            job.refresh_from_db()
            assert job.status == "succeeded", job.error
            folders[step.key], finals[step.key] = job.out_dir, job
        elif step.kind == "tower":
            config = resolved(_tower_config(step, folders))
            out = Path(settings.FGAM_TRAINING_DIR) / f"hand-{name}-tower"
            subprocess.run(
                [sys.executable, "-m", "training", "swap-tower", "--model", config["model"],
                 "--vision-tower", config["vision_tower"], "--out", str(out)],
                check=True, cwd=settings.BASE_DIR, capture_output=True,
            )  # fmt: skip
            folders[step.key] = str(out)
        else:
            options = {k: step.config[k] for k in ("batch_size", "max_new_tokens")}
            source = finals.get(step.model_from)
            if source is not None:
                bench = start_benchmark(probe_set=step.probe_set, training_job=source, **options)
            else:
                model = resolved({"model": step.config["model"]})["model"]
                bench = start_benchmark(probe_set=step.probe_set, model_spec=model, **options)
            bench.refresh_from_db()
            assert bench.status == "done", bench.error
    return time.perf_counter() - start


def _tower_config(step, folders) -> dict:
    """The tower step's config as planned (the study stored it resolved once it ran)."""
    from training.studies.plan import reference

    need = step.needs[0]
    return {"model": step.config["model"], "vision_tower": reference(need)}


if __name__ == "__main__":
    sys.exit(main())
