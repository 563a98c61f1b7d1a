"""``python manage.py export_version --dataset NAME [--dataset NAME ...] [--status accepted|any]
[--reference] [--unapproved-trajectories] [--progress] --out DIR``: cut a version into DIR, in
this process, with a progress bar on stderr, and print its path."""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from webapp.exports.selection import ExportError
from webapp.exports.services import cut_version, export_version


class ProgressBar:
    """A tqdm bar of rows written (regions, questions, trajectories), its label the phase.

    Fed by the export's progress callback, which already runs at a bounded rate (about once a
    second), so the bar costs nothing per row. tqdm hides itself when ``stream`` is not a
    terminal unless ``always`` (``--progress``: logs of batch jobs).
    """

    def __init__(self, stream: TextIO, *, always: bool = False) -> None:
        self.bar = tqdm(
            total=None,
            unit="row",
            file=stream,
            disable=False if always else None,
            desc="export",
            dynamic_ncols=True,
            mininterval=0,  # the export already calls at most about once a second
        )

    def update(self, phase: str, done: int, total: int) -> None:
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.set_description_str(phase, refresh=False)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.close()


class Command(BaseCommand):
    help = "Cut a dataset version (FORMATS.md layout) into a folder and print its path."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", action="append", required=True, help="repeatable")
        parser.add_argument("--status", choices=("accepted", "any"), default="accepted")
        parser.add_argument("--origin", action="append", default=[], help="gt, detector, human")
        parser.add_argument("--min-score", type=float, default=None)
        parser.add_argument("--include-flagged", action="store_true")
        parser.add_argument(
            "--unapproved-trajectories", action="store_true",
            help="Stage-2 takes every trajectory that was not rejected (default: approved only)",
        )  # fmt: skip
        parser.add_argument("--holdout", type=float, default=0.0, help="held-out image fraction")
        parser.add_argument("--reference", action="store_true", help="uri instead of bytes")
        parser.add_argument("--out", required=True, help="parent folder of the version")
        parser.add_argument(
            "--progress", action="store_true", help="show the progress bar also when stderr is "
            "not a terminal (by default it shows on a terminal only)",
        )  # fmt: skip

    def handle(self, *args, **opts) -> None:
        filters = {
            "status": opts["status"],
            "origins": opts["origin"],
            "min_score": opts["min_score"],
            "exclude_flagged": not opts["include_flagged"],
            "approved_trajectories_only": not opts["unapproved_trajectories"],
            "holdout_fraction": opts["holdout"],
        }
        try:
            version = cut_version(
                datasets=opts["dataset"],
                filters=filters,
                reference=opts["reference"],
                out_dir=opts["out"],
                enqueue=False,
            )
            # The raw stream: Django's wrapper would end every tqdm refresh with a newline.
            stream = getattr(self.stderr, "_out", self.stderr)
            with ProgressBar(stream, always=opts["progress"]) as bar:
                version = export_version(version_id=version.pk, progress_callback=bar.update)
        except ExportError as err:
            raise CommandError(str(err)) from err
        assert version is not None
        counts = version.counts
        self.stderr.write(
            f"{version.name}: {counts.get('stage1_images', 0)} images, "
            f"{counts.get('stage1_regions', 0)} regions, sha256 {version.content_sha256}"
        )
        self.stdout.write(version.location)
