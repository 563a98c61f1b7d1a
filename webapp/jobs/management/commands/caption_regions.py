"""``manage.py caption_regions``: start (and with ``--wait`` follow) a caption run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from webapp.jobs.captioning import STRATEGIES, start_caption_run
from webapp.jobs.management.commands._common import RunCommand
from webapp.jobs.models import Run
from webapp.regions.models import Region


class Command(RunCommand):
    help = "Caption a dataset's uncaptioned regions (template, local model or LLM) as a run."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--strategy", choices=STRATEGIES, required=True)
        parser.add_argument(
            "--model", default="", help="model id or folder (local), or the LLM's model name"
        )
        parser.add_argument("--concurrency", type=int, default=16, help="LLM requests at once")
        parser.add_argument("--origin", choices=Region.Origin.values, default=None)
        parser.add_argument("--from-run", type=int, default=None, help="only this run's regions")
        parser.add_argument("--dtype", default="", help="auto, float32, float16 or bfloat16")

    def start(self, options: dict[str, Any]) -> Run:
        region_filter: dict[str, Any] = {}
        if options["origin"]:
            region_filter["origin"] = options["origin"]
        if options["from_run"] is not None:
            region_filter["run"] = options["from_run"]
        return start_caption_run(
            dataset=self.dataset(options["dataset"]),
            strategy=options["strategy"],
            model=options["model"],
            batch_size=options["batch_size"],
            concurrency=options["concurrency"],
            device=options["device"],
            dtype=options["dtype"],
            region_filter=region_filter,
        )
