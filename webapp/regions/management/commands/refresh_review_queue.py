"""Recount a dataset's review queue (``QueueEntry``) from its regions.

The triggers keep the queue right on every write; this is for what they cannot see: a run's
``box_threshold`` edited after its regions were written, or a database restored without them.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from webapp.catalog.models import Dataset, Image

BATCH = 2000


class Command(BaseCommand):
    help = "Recount the pending regions and the uncertainty of every image of a dataset."

    def add_arguments(self, parser) -> None:
        parser.add_argument("dataset", help="the dataset's name")

    def handle(self, *args, dataset: str, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("the stored queue exists on PostgreSQL only; SQLite reads regions")
        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            raise CommandError(f"no dataset named {dataset!r}")
        images = Image.objects.filter(dataset=found).order_by("pk").values_list("pk", flat=True)
        total, done, after = images.count(), 0, 0
        while ids := list(images.filter(pk__gt=after)[:BATCH]):
            # One short transaction per batch: the rows stay locked only while they are counted.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT regions_queue_refresh(%s::bigint[], true)", [ids])
            done, after = done + len(ids), ids[-1]
            self.stdout.write(f"{done}/{total} images recounted")
        self.stdout.write(self.style.SUCCESS(f"review queue of {dataset!r} recounted"))
