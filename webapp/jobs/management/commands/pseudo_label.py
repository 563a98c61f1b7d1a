"""``manage.py pseudo_label``: start (and with ``--wait`` follow) a Grounding DINO run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from webapp.jobs.management.commands._common import RunCommand
from webapp.jobs.models import Run
from webapp.jobs.pseudo_label import DEFAULT_BATCH_SIZE, start_pseudo_label_run


class Command(RunCommand):
    help = "Propose regions on a dataset's images with Grounding DINO, as a run of Celery tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--model", default="", help="model id or folder (default FGAM_DETECTOR_MODEL)"
        )
        prompt = parser.add_mutually_exclusive_group(required=True)
        prompt.add_argument("--labels", help='comma-separated phrases, e.g. "cat,dog"')
        prompt.add_argument(
            "--prompt-from",
            choices=["vocabulary", "caption"],
            help="vocabulary: the dataset's ground-truth phrases; caption: noun phrases of "
            "each image's global caption",
        )
        parser.add_argument("--box-threshold", type=float, default=None)
        parser.add_argument("--text-threshold", type=float, default=None)
        parser.add_argument("--nms-iou", type=float, default=0.5)
        parser.add_argument("--dtype", default="", help="auto, float32, float16 or bfloat16")
        parser.add_argument("--split", default=None, help="only images of this split")

    def start(self, options: dict[str, Any]) -> Run:
        labels = [x for x in (options["labels"] or "").split(",") if x.strip()]
        return start_pseudo_label_run(
            dataset=self.dataset(options["dataset"]),
            model=options["model"],
            prompt_mode=options["prompt_from"] or "labels",
            labels=labels or None,
            box_threshold=options["box_threshold"],
            text_threshold=options["text_threshold"],
            nms_iou=options["nms_iou"],
            batch_size=options["batch_size"] or DEFAULT_BATCH_SIZE,
            device=options["device"],
            dtype=options["dtype"],
            image_filter={"split": options["split"]} if options["split"] is not None else None,
        )
