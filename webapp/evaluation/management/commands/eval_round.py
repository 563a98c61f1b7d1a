"""``manage.py eval_round <action> ...``: set up, open, close and report evaluation rounds.

    eval_round create --name "Table 5" [--raters-per-item 3] [--seed 0]
    eval_round items "Table 5" --version v3 [--n 200] [--seed S] [--stratify]
    eval_round items "Table 5" --file items.jsonl [--n 200] [--stratify]
    eval_round system "Table 5" --name "LLaVA-1.5-7B" [--responses base.jsonl]
    eval_round responses "Table 5" --system "LLaVA-1.5-7B" base.jsonl
    eval_round generate "Table 5" --system "+ FGAM" --model CKPT --rm RM [--k 2] [--now]
    eval_round baseline "Table 5" --system "LLaVA-1.5-7B"
    eval_round check "Table 5"          # what stops it opening, and responses naming a model
    eval_round open "Table 5" [--acknowledge-leaks]
    eval_round close "Table 5"
    eval_round results "Table 5" [--table table5] [--format md|csv|tex] [--out FILE]

A round is named by its name or id. Errors name the file and line and change nothing.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from webapp.evaluation import results, services
from webapp.evaluation.generation import run_generation, start_generation
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Round, System
from webapp.exports.models import DatasetVersion


def find_round(value: str) -> Round:
    found = Round.objects.filter(name=value).first()
    if found is None and value.isdigit():
        found = Round.objects.filter(pk=int(value)).first()
    if found is None:
        raise CommandError(f"no evaluation round named {value!r}")
    return found


def find_system(round_: Round, name: str) -> System:
    system = round_.systems.filter(name=name).first()
    if system is None:
        known = ", ".join(round_.systems.values_list("name", flat=True)) or "none"
        raise CommandError(f"round {round_.name!r} has no system {name!r} (it has: {known})")
    return system


class Command(BaseCommand):
    help = "Set up, open, close and report blind evaluation rounds."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="a new draft round")
        create.add_argument("--name", required=True)
        create.add_argument("--raters-per-item", type=int, default=3)
        create.add_argument("--seed", type=int, default=0)
        create.add_argument("--description", default="")
        items = actions.add_parser("items", help="sample or import the items")
        items.add_argument("round")
        source = items.add_mutually_exclusive_group(required=True)
        source.add_argument("--version", help="a ready dataset version's name")
        source.add_argument("--file", type=Path, help="items JSONL")
        items.add_argument("--n", type=int)
        items.add_argument("--seed", type=int)
        items.add_argument("--stratify", action="store_true", help="keep each source's share")
        system = actions.add_parser("system", help="add a system")
        system.add_argument("round")
        system.add_argument("--name", required=True)
        system.add_argument("--responses", type=Path, help="its responses JSONL")
        responses = actions.add_parser("responses", help="import a system's responses")
        responses.add_argument("round")
        responses.add_argument("--system", required=True)
        responses.add_argument("file", type=Path)
        generate = actions.add_parser("generate", help="responses from python -m training rectify")
        generate.add_argument("round")
        generate.add_argument("--system", required=True)
        generate.add_argument(
            "--model", required=True, help="checkpoint folder, hub id or URL#MODEL"
        )
        generate.add_argument("--rm", required=True, help="the rectification module, same forms")
        generate.add_argument("--k", type=int, default=2, help="most revisions per item")
        generate.add_argument("--now", action="store_true", help="run here instead of on a worker")
        baseline = actions.add_parser("baseline", help="the system Table 3 compares against")
        baseline.add_argument("round")
        baseline.add_argument("--system", required=True)
        for name in ("check", "close"):
            actions.add_parser(name).add_argument("round")
        opening = actions.add_parser("open", help="make the seats and open to raters")
        opening.add_argument("round")
        opening.add_argument("--acknowledge-leaks", action="store_true")
        report = actions.add_parser("results", help="print or write a results table")
        report.add_argument("round")
        report.add_argument("--table", choices=list(results.TABLES), default="table5")
        report.add_argument("--format", choices=list(results.FORMATS), default="md")
        report.add_argument("--out", type=Path)

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"do_{options['action']}")(options)
        except InputError as error:
            raise CommandError(str(error)) from None

    def do_create(self, o) -> None:
        round_ = services.create_round(
            name=o["name"], raters_per_item=o["raters_per_item"], seed=o["seed"],
            description=o["description"],
        )  # fmt: skip
        self.stdout.write(f"created round {round_.pk} {round_.name!r} (draft)")

    def do_items(self, o) -> None:
        round_ = find_round(o["round"])
        if o["version"]:
            version = DatasetVersion.objects.filter(name=o["version"]).first()
            if version is None:
                raise CommandError(f"no dataset version named {o['version']!r}")
            n = services.sample_from_version(
                round_=round_, version=version, n=o["n"] or services.DEFAULT_SAMPLE_SIZE,
                seed=o["seed"], stratify=o["stratify"],
            )  # fmt: skip
        else:
            with o["file"].open(encoding="utf-8") as lines:
                n = services.import_items(
                    round_=round_, lines=lines, name=str(o["file"]), n=o["n"],
                    stratify=o["stratify"],
                )  # fmt: skip
        self.stdout.write(f"{round_.name}: {n} items")

    def do_system(self, o) -> None:
        round_ = find_round(o["round"])
        with transaction.atomic():
            system = services.add_system(round_=round_, name=o["name"])
            if o["responses"]:
                with o["responses"].open(encoding="utf-8") as lines:
                    n = services.import_responses(
                        system=system, lines=lines, name=str(o["responses"])
                    )
                self.stdout.write(f"{system.name}: {n} responses")
        self.stdout.write(f"added system {system.name!r}")

    def do_responses(self, o) -> None:
        system = find_system(find_round(o["round"]), o["system"])
        with o["file"].open(encoding="utf-8") as lines:
            n = services.import_responses(system=system, lines=lines, name=str(o["file"]))
        self.stdout.write(f"{system.name}: {n} responses")

    def do_generate(self, o) -> None:
        system = find_system(find_round(o["round"]), o["system"])
        if not o["now"]:
            start_generation(system=system, model=o["model"], rm=o["rm"], k=o["k"])
            self.stdout.write(f"{system.name}: rectify job queued (gpu queue)")
            return
        with transaction.atomic():
            start_generation(system=system, model=o["model"], rm=o["rm"], k=o["k"])
            # Claimed here first, so the task queued on commit finds nothing to do.
            done = run_generation(system_id=system.pk)
        assert done is not None
        self.stdout.write(f"{done.name}: {done.status}; {done.responses.count()} responses")
        if done.error:
            self.stdout.write(done.error)

    def do_baseline(self, o) -> None:
        round_ = find_round(o["round"])
        services.set_baseline(round_=round_, system=find_system(round_, o["system"]))
        self.stdout.write(f"{round_.name}: baseline {o['system']!r}")

    def do_check(self, o) -> None:
        round_ = find_round(o["round"])
        for problem in services.readiness(round_):
            self.stdout.write(f"problem: {problem}")
        for leak in services.leak_warnings(round_):
            self.stdout.write(
                f"names a model: {leak.system} item {leak.item} ({leak.word!r}): {leak.excerpt}"
            )
        self.stdout.write("check done")

    def do_open(self, o) -> None:
        round_ = services.open_round(
            round_=find_round(o["round"]), acknowledge_leaks=o["acknowledge_leaks"]
        )
        self.stdout.write(f"{round_.name}: open, {round_.assignments.count()} seats")

    def do_close(self, o) -> None:
        round_ = services.close_round(round_=find_round(o["round"]))
        self.stdout.write(f"{round_.name}: closed; results frozen")

    def do_results(self, o) -> None:
        round_ = find_round(o["round"])
        if round_.status == Round.Status.DRAFT:
            raise CommandError(f"round {round_.name!r} is a draft; it has no results yet")
        baseline = round_.baseline.key if round_.baseline_id else None
        if o["table"] == "table3" and baseline is None:
            raise CommandError("table3 needs a baseline: eval_round baseline ROUND --system NAME")
        table = results.table(
            results.results_for(round_), results.system_names(round_), o["table"], baseline
        )
        text = getattr(table, results.FORMATS[o["format"]][1])()
        if o["out"]:
            o["out"].write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {o['out']}")
        else:
            self.stdout.write(text)
