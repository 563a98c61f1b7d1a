from functools import partial
from pathlib import Path

from webapp.catalog.importing import import_captions
from webapp.catalog.importing.command import ImportCommand


class Command(ImportCommand):
    help = "Import image-caption pairs from a JSONL, CSV or Parquet file (local image paths)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--file", required=True, type=Path, help=".jsonl, .csv or .parquet")

    def service(self, options):
        return partial(import_captions, file=options["file"])
