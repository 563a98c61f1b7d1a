"""``python manage.py make_demo_models``: build the quick start's tiny random-weight models.

Writes ``VAR_DIR/models/<name>`` for each of ``webapp.core.demo_models.DEMO_MODELS``; a model
already built is skipped, so ``make demo`` can run it every time.
"""

import shutil
import time

from django.core.management.base import BaseCommand

from webapp.core.demo_models import DEMO_MODELS, models_dir


class Command(BaseCommand):
    help = "Build the tiny random-weight demo models (detector, captioner, CLIP, LLaVA, RM)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="rebuild models already built")

    def handle(self, *args, **options):
        self.stdout.write(f"Demo models (random weights, for trying the flow) in {models_dir()}:")
        for n, model in enumerate(DEMO_MODELS.values(), start=1):
            prefix = f"  [{n}/{len(DEMO_MODELS)}] {model.name:<15}"
            if model.is_built() and not options["force"]:
                self.stdout.write(f"{prefix} already built")
                continue
            if model.folder.exists():  # half-written by an interrupted run, or --force
                shutil.rmtree(model.folder)
            started = time.monotonic()
            self.stdout.write(f"{prefix} building {model.what}...", ending="")
            self.stdout.flush()
            partial = model.folder.with_name(model.folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            model.build(partial)
            partial.rename(model.folder)  # config.json appears only once the folder is whole
            self.stdout.write(f" done in {time.monotonic() - started:.1f} s")
