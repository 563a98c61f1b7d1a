"""What the four catalog import commands share: common options, the progress bar, errors.

The commands stay thin: they turn options into a call of the service function and its
report or ``ImportFailed`` into output and an exit status.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.core.importing.progress import ProgressBar
from webapp.core.importing.report import ERRORS_SHOWN, ON_ERROR, ImportFailed, ImportReport


class ImportCommand(BaseCommand):
    """Subclasses add their file options and say which service to call with them."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, help="dataset name (created if absent)")
        parser.add_argument("--images", required=True, type=Path, help="folder of image files")
        parser.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="abort",
            help="abort: write nothing if any record is bad (default); skip: import the good ones",
        )

    def service(self, options: dict[str, Any]) -> Callable[..., ImportReport]:
        """The service function and its format-specific keyword arguments, bound."""
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        # The raw stream: OutputWrapper ends every write with a newline, which would break
        # tqdm's in-place redraws.
        progress = ProgressBar(self.stderr._out)
        call = self.service(options)
        try:
            report = call(
                dataset=options["dataset"],
                images=options["images"],
                on_error=options["on_error"],
                progress=progress,
            )
        except ImportFailed as exc:
            progress.close()
            errors = exc.report.errors
            for line in exc.report.error_lines(ERRORS_SHOWN):
                self.stderr.write(line)
            raise CommandError(
                f"{exc.report.format} import failed with {len(errors)} error"
                f"{'s' if len(errors) != 1 else ''}; nothing was written"
            ) from exc
        progress.close()
        for line in report.error_lines(ERRORS_SHOWN):
            self.stderr.write(f"skipped: {line}")
        self.stdout.write(report.summary())
