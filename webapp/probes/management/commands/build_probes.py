"""``python manage.py build_probes --dataset NAME [--dataset NAME ...] --kind pope|spatial
[--split random|popular|adversarial] [--images 500] [--per-image 3] [--seed 0] [--out DIR]
[--allow-seen] [--reference] [--progress]``: build a probe set in this process, with a
progress bar on stderr, and print its folder."""

from __future__ import annotations

from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from webapp.exports.management.commands.export_version import ProgressBar
from webapp.probes.building import ProbeBuildError, build_probe_set, start_probe_set
from webapp.probes.sampling import SamplingError


class Command(BaseCommand):
    help = "Build a probe set (FORMATS.md, 'A probe set on disk') and print its folder."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", action="append", required=True, help="repeatable")
        parser.add_argument("--kind", choices=("pope", "spatial"), required=True)
        parser.add_argument(
            "--split", choices=("random", "popular", "adversarial", "spatial"), default=None,
            help="POPE negatives (default random); spatial probes have the split 'spatial'",
        )  # fmt: skip
        parser.add_argument("--images", type=int, default=500, help="images to draw")
        parser.add_argument(
            "--per-image", type=int, default=3,
            help="POPE: positives (and as many negatives) per image; spatial: pairs per image",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", default=None, help="parent folder (default FGAM_PROBES_DIR)")
        parser.add_argument(
            "--allow-seen", action="store_true",
            help="build even if a ready dataset version holds some of the images (recorded)",
        )  # fmt: skip
        parser.add_argument("--reference", action="store_true", help="uri instead of bytes")
        parser.add_argument(
            "--progress", action="store_true",
            help="show the progress bar also when stderr is not a terminal",
        )  # fmt: skip

    def handle(self, *args, **opts) -> None:
        try:
            probe_set = start_probe_set(
                datasets=opts["dataset"],
                kind=opts["kind"],
                split=opts["split"],
                images=opts["images"],
                per_image=opts["per_image"],
                seed=opts["seed"],
                allow_seen=opts["allow_seen"],
                reference=opts["reference"],
                out_dir=opts["out"],
                enqueue=False,
            )
            stream = cast(TextIO, getattr(self.stderr, "_out", self.stderr))
            with ProgressBar(stream, always=opts["progress"]) as bar:
                probe_set = build_probe_set(probe_set_id=probe_set.pk, progress_callback=bar.update)
        except (ProbeBuildError, SamplingError) as exc:
            raise CommandError(str(exc)) from exc
        counts = probe_set.counts
        self.stderr.write(
            f"probe set {probe_set.set_id}: {counts['probes']} probes over {counts['images']} "
            f"images ({counts['yes']} yes), sha256 {probe_set.content_sha256[:12]}"
        )
        self.stdout.write(probe_set.path)
