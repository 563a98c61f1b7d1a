"""``manage.py import_trajectories --dataset NAME FILE``: correction data from JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.core.importing.progress import ProgressBar
from webapp.core.importing.report import ERRORS_SHOWN, ON_ERROR, ImportFailed
from webapp.trajectories.importing import import_trajectories
from webapp.trajectories.models import Trajectory


class Command(BaseCommand):
    help = (
        "Import correction trajectories from JSONL in the FORMATS.md SFT shape (one line per "
        "step). Images must already be in the dataset, named by sha256, file name or uri."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the .jsonl file")
        parser.add_argument("--dataset", required=True, help="the dataset holding the images")
        parser.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="abort",
            help="abort: write nothing if any line is bad (default); skip: import the good "
            "trajectories and leave out any with a bad line",
        )
        parser.add_argument(
            "--status",
            choices=Trajectory.Status.values,
            default=Trajectory.Status.IN_REVIEW,
            help="status of trajectories whose lines carry none (default: in_review)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The raw stream: OutputWrapper ends every write with a newline, breaking tqdm redraws.
        progress = ProgressBar(self.stderr._out)
        try:
            report = import_trajectories(
                dataset=options["dataset"],
                file=options["file"],
                on_error=options["on_error"],
                status=options["status"],
                progress=progress,
            )
        except ImportFailed as exc:
            progress.close()
            for line in exc.report.error_lines(ERRORS_SHOWN):
                self.stderr.write(line)
            count = len(exc.report.errors)
            raise CommandError(
                f"trajectories import failed with {count} error{'s' if count != 1 else ''}; "
                "nothing was written"
            ) from exc
        progress.close()
        for line in report.error_lines(ERRORS_SHOWN):
            self.stderr.write(f"skipped: {line}")
        self.stdout.write(report.summary())
