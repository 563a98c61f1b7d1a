from functools import partial
from pathlib import Path

from webapp.catalog.importing import import_llava
from webapp.catalog.importing.command import ImportCommand


class Command(ImportCommand):
    help = "Import LLaVA-Instruct conversations as Stage-2 questions with reference answers."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--file", required=True, type=Path, help="llava_instruct_*.json")

    def service(self, options):
        return partial(import_llava, file=options["file"])
