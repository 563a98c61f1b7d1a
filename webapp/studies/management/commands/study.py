"""``python manage.py study create|start|retry|status``: a study from the command line.

    study create --file study.json [--version ID]
    study create --name N --version ID --preset table2 [--preset figure2] --model M [--rm RM]
                 [--clip CLIP] --probe-set ID [--probe-set ID ...] [--settings JSON] [--round R]
    study start NAME          start (or restart) it; finished steps are kept
    study retry NAME [--arm A]  retry the failed steps (of one arm)
    study status NAME [--json]  one line per step: kind, key, arms, status, job

``create`` prints the study's name and its steps; a bad study exits with one line naming what
is wrong (the same checks as the page and the API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.studies.models import Study
from webapp.studies.results import step_rows
from webapp.studies.services import (
    StudyServiceError,
    create_study,
    find_version,
    retry_study,
    start_study,
)


class Command(BaseCommand):
    help = "Create, start, retry or show a study (the arms of Table 2, Figure 1, Figure 2)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a study from study.json or options")
        create.add_argument("--file", help="a study.json")
        create.add_argument("--name")
        create.add_argument("--version", help="dataset version id or name")
        create.add_argument("--preset", action="append", default=[], help="table2, figure1, …")
        create.add_argument("--model", help="the base M")
        create.add_argument("--rm", default="", help="the RL reward's RM")
        create.add_argument("--clip", default="", help="Stage-1's starting CLIP")
        create.add_argument("--probe-set", action="append", default=[], dest="probe_sets")
        create.add_argument("--settings", default="", help='JSON, e.g. {"sft": {"max_steps": 5}}')
        create.add_argument("--round", default="", help="an evaluation round's name")
        for name in ("start", "status"):
            one = sub.add_parser(name)
            one.add_argument("name")
            if name == "status":
                one.add_argument("--json", action="store_true")
        retry = sub.add_parser("retry", help="retry the failed steps of a study (or one arm)")
        retry.add_argument("name")
        retry.add_argument("--arm", default="")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"do_{options['action']}")(options)
        except StudyServiceError as err:
            raise CommandError(str(err)) from err

    def do_create(self, options: dict[str, Any]) -> None:
        if options["file"]:
            try:
                spec = json.loads(Path(options["file"]).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise CommandError(f"{options['file']}: {err}") from err
        else:
            missing = [k for k in ("name", "version", "model") if not options[k]]
            if missing or not options["probe_sets"]:
                raise CommandError(
                    "without --file, name --name, --version, --model and one --probe-set or more"
                )
            spec = {
                "name": options["name"], "version": options["version"], "model": options["model"],
                "rm": options["rm"], "arms": options["preset"] or "table2",
                "probe_sets": options["probe_sets"],
            }  # fmt: skip
            if options["clip"]:
                spec["clip"] = options["clip"]
            if options["round"]:
                spec["round"] = options["round"]
            if options["settings"]:
                try:
                    spec["settings"] = json.loads(options["settings"])
                except ValueError as err:
                    raise CommandError(f"--settings: {err}") from err
        version = None
        if options.get("version"):
            version = find_version(options["version"])
            if version is None:
                raise CommandError(f"no dataset version {options['version']!r}")
        study = create_study(spec=spec, version=version)
        self.stdout.write(f"study {study.name}: {study.steps.count()} steps")
        self._print_steps(study)

    def do_start(self, options: dict[str, Any]) -> None:
        study = start_study(study=self._study(options["name"]))
        self.stdout.write(f"study {study.name}: {study.status}")
        self._print_steps(study)

    def do_retry(self, options: dict[str, Any]) -> None:
        study = self._study(options["name"])
        steps = retry_study(study=study, arm=options["arm"])
        self.stdout.write(f"study {study.name}: retried {len(steps)} step(s)")
        self._print_steps(study)

    def do_status(self, options: dict[str, Any]) -> None:
        study = self._study(options["name"])
        if options["json"]:
            data = {"name": study.name, "status": study.status, "steps": step_rows(study)}
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(f"study {study.name}: {study.status}")
        self._print_steps(study)

    def _study(self, name: str) -> Study:
        study = Study.objects.filter(name=name).first()
        if study is None:
            raise CommandError(f"no study named {name!r}")
        return study

    def _print_steps(self, study: Study) -> None:
        for row in step_rows(study):
            job = row["job"] or "-"
            self.stdout.write(
                f"  {row['kind']:<7} {row['short']}  {row['status']:<9} {job:<16} "
                f"{', '.join(row['arms'])}"
            )
