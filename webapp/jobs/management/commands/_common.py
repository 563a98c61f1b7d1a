"""What the run commands share: ``--wait`` with a progress bar, and the exit status."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.catalog.models import Dataset
from webapp.jobs.models import Run
from webapp.jobs.progress import describe_end, follow_run


class RunCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--batch-size", type=int, default=None, help="items per task")
        parser.add_argument(
            "--device", default="", help="auto, cpu, cuda or cuda:N (default FGAM_DEVICE)"
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="follow the run with a progress bar; exit non-zero if it fails",
        )
        parser.add_argument(
            "--poll", type=float, default=1.0, help="seconds between progress checks (--wait)"
        )

    def dataset(self, name: str) -> Dataset:
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None:
            raise CommandError(f"no dataset named {name!r}")
        return dataset

    def start(self, options: dict[str, Any]) -> Run:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = self.start(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"run {run.pk} ({run.kind}) started: {run.total} items so far")
        if not options["wait"]:
            return
        # The raw stream: OutputWrapper would end every tqdm redraw with a newline.
        run = follow_run(run, stream=self.stderr._out, poll_s=options["poll"])
        for line in describe_end(run):
            self.stdout.write(line)
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}")
