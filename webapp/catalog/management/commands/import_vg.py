from functools import partial
from pathlib import Path

from webapp.catalog.importing import import_vg
from webapp.catalog.importing.command import ImportCommand


class Command(ImportCommand):
    help = "Import Visual Genome region descriptions; region phrases become region captions."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--regions", required=True, type=Path, help="region_descriptions.json")
        parser.add_argument("--image-data", required=True, type=Path, help="image_data.json")

    def service(self, options):
        return partial(import_vg, regions=options["regions"], image_data=options["image_data"])
