from functools import partial
from pathlib import Path

from webapp.catalog.importing import import_coco
from webapp.catalog.importing.command import ImportCommand


class Command(ImportCommand):
    help = "Import a COCO instances file (and its captions file) with the images it names."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--instances", required=True, type=Path, help="instances_*.json")
        parser.add_argument("--captions", type=Path, help="captions_*.json (global captions)")

    def service(self, options):
        return partial(import_coco, instances=options["instances"], captions=options["captions"])
