"""Run the consistency checks over a dataset so the review queue can filter flagged regions."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp.catalog.models import Dataset, Image
from webapp.regions.services import apply_lint

BATCH = 500


class Command(BaseCommand):
    help = "Flag regions whose caption, phrase or box fail the consistency checks."

    def add_arguments(self, parser) -> None:
        parser.add_argument("dataset", help="the dataset's name")

    def handle(self, *args, dataset: str, **options) -> None:
        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            raise CommandError(f"no dataset named {dataset!r}")
        images = Image.objects.filter(dataset=found, regions__isnull=False).distinct()
        total = images.count()
        done = flagged = 0
        after = 0
        while True:
            ids = list(
                images.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:BATCH]
            )
            if not ids:
                break
            for image_id in ids:
                flagged += sum(1 for reason in apply_lint(image_id=image_id).values() if reason)
            done += len(ids)
            after = ids[-1]
            self.stdout.write(f"{done}/{total} images checked, {flagged} regions flagged")
        self.stdout.write(self.style.SUCCESS(f"{flagged} regions flagged on {done} images"))
