"""``python manage.py export_version --dataset NAME [--dataset NAME ...] [--status accepted|any]
[--reference] --out DIR``: cut a version into DIR, in this process, and print its path."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp.exports.services import ExportError, cut_version, export_version


class Command(BaseCommand):
    help = "Cut a dataset version (FORMATS.md layout) into a folder and print its path."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", action="append", required=True, help="repeatable")
        parser.add_argument("--status", choices=("accepted", "any"), default="accepted")
        parser.add_argument("--origin", action="append", default=[], help="gt, detector, human")
        parser.add_argument("--min-score", type=float, default=None)
        parser.add_argument("--include-flagged", action="store_true")
        parser.add_argument("--holdout", type=float, default=0.0, help="held-out image fraction")
        parser.add_argument("--reference", action="store_true", help="uri instead of bytes")
        parser.add_argument("--out", required=True, help="parent folder of the version")

    def handle(self, *args, **opts) -> None:
        filters = {
            "status": opts["status"],
            "origins": opts["origin"],
            "min_score": opts["min_score"],
            "exclude_flagged": not opts["include_flagged"],
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
            version = export_version(version_id=version.pk)
        except ExportError as err:
            raise CommandError(str(err)) from err
        assert version is not None
        counts = version.counts
        self.stderr.write(
            f"{version.name}: {counts.get('stage1_images', 0)} images, "
            f"{counts.get('stage1_regions', 0)} regions, sha256 {version.content_sha256}"
        )
        self.stdout.write(version.location)
