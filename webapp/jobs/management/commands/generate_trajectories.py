"""``manage.py generate_trajectories``: start (and with ``--wait`` follow) a trajectory run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from webapp.jobs.management.commands._common import RunCommand
from webapp.jobs.models import Run
from webapp.jobs.trajectories import MAX_K, start_trajectory_run
from workers.seeded_errors import SEEDED_ERROR_TYPES


class Command(RunCommand):
    help = (
        "Generate correction trajectories (M answers, the RM critiques, M revises; at most K "
        "revisions) for a dataset's questions, as a run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--m",
            default="",
            help="M: URL#MODEL for an OpenAI-compatible endpoint, or a local model id/folder "
            "(default FGAM_LLM_BASE_URL#FGAM_MLLM_MODEL)",
        )
        parser.add_argument(
            "--rm",
            default="",
            help="the rectification module, as --m (default FGAM_LLM_BASE_URL#FGAM_RM_MODEL)",
        )
        parser.add_argument("-k", "--k", type=int, default=3, help=f"most revisions (0-{MAX_K})")
        parser.add_argument(
            "--seeded-errors",
            default="",
            help="start from each item's reference answer with one injected error of one of "
            f"these types, comma-separated: {', '.join(SEEDED_ERROR_TYPES)}",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the injections")
        parser.add_argument("--concurrency", type=int, default=16, help="items in flight at once")
        parser.add_argument("--max-retries", type=int, default=5, help="retries per call")
        parser.add_argument("--timeout", type=float, default=None, help="seconds per call")
        parser.add_argument("--max-new-tokens", type=int, default=512)
        parser.add_argument(
            "--no-m-vision", action="store_true", help="do not send the image to an endpoint M"
        )
        parser.add_argument(
            "--rm-vision", action="store_true", help="send the image to the RM as well"
        )
        parser.add_argument("--dtype", default="", help="auto, float32, float16 or bfloat16")
        parser.add_argument("--split", default=None, help="only images of this split")
        parser.add_argument("--source", default=None, help="only questions from this source")
        parser.add_argument("--min-id", type=int, default=None, help="smallest question id")
        parser.add_argument("--max-id", type=int, default=None, help="largest question id")

    def start(self, options: dict[str, Any]) -> Run:
        question_filter: dict[str, Any] = {}
        for key in ("split", "source", "min_id", "max_id"):
            if options[key] is not None:
                question_filter[key] = options[key]
        seeded = [t.strip() for t in options["seeded_errors"].split(",") if t.strip()]
        return start_trajectory_run(
            dataset=self.dataset(options["dataset"]),
            m=options["m"],
            rm=options["rm"],
            k=options["k"],
            seeded_errors=seeded,
            seed=options["seed"],
            concurrency=options["concurrency"],
            batch_size=options["batch_size"],
            timeout=options["timeout"],
            max_retries=options["max_retries"],
            max_new_tokens=options["max_new_tokens"],
            m_vision=not options["no_m_vision"],
            rm_vision=options["rm_vision"],
            device=options["device"],
            dtype=options["dtype"],
            question_filter=question_filter,
        )
