from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from webapp.catalog.demo import write_demo


class Command(BaseCommand):
    help = "Draw a demo dataset of simple scenes and import it through import_coco."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", default="demo-scenes")
        parser.add_argument("--images", type=int, default=24, help="how many scenes (>= 1)")
        parser.add_argument("--out", type=Path, default=None, help="default: var/demo")

    def handle(self, *args, dataset: str, images: int, out: Path | None, **options):
        out = out or Path(settings.VAR_DIR) / "demo"
        instances, captions, images_dir = write_demo(out, count=images)
        self.stdout.write(f"wrote {images} scenes and their COCO files to {out}")
        call_command(
            "import_coco",
            dataset=dataset,
            instances=str(instances),
            captions=str(captions),
            images=str(images_dir),
            stdout=self.stdout,
            stderr=self.stderr,
        )
