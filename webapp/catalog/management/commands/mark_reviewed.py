"""Mark images exhaustively reviewed in bulk (or clear the mark with ``--undo``).

Which images: ``--images ID ...`` of the dataset, or ``--all-with-accepted``, every image of
the dataset with at least one accepted region. Either way an image with pending regions is not
marked (``webapp.regions.review_marks``). ``--by`` names who is recorded; without it the mark
has no user, which the review page shows as such.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.catalog.models import Dataset, Image
from webapp.regions.review_marks import images_with_accepted, mark_images


class Command(BaseCommand):
    help = "Mark a dataset's images exhaustively reviewed (every visible object has a box)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset name")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--images", type=int, nargs="+", metavar="ID", help="image ids")
        which.add_argument(
            "--all-with-accepted",
            action="store_true",
            help="every image of the dataset with at least one accepted region",
        )
        parser.add_argument("--undo", action="store_true", help="clear the mark instead")
        parser.add_argument("--by", default=None, metavar="USERNAME", help="who marks them")

    def handle(self, *args, dataset, images, all_with_accepted, undo, by, **options):
        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            raise CommandError(f"no dataset named {dataset!r}")
        user = None
        if by is not None:
            user = get_user_model().objects.filter(username=by).first()
            if user is None:
                raise CommandError(f"no user named {by!r}")
        chosen = Image.objects.filter(dataset=found)
        if all_with_accepted:
            chosen = images_with_accepted(chosen)
        counts = mark_images(
            images=chosen,
            image_ids=None if all_with_accepted else images,
            reviewed=not undo,
            user=user,
        )
        verb = "cleared" if undo else "marked"
        state = "not marked" if undo else "already marked"
        line = f"{verb} {counts.changed}, {state} {counts.unchanged}"
        if not undo:
            line += f", skipped with pending regions {counts.pending}"
        if counts.missing:
            line += f", not in {dataset} {counts.missing}"
        self.stdout.write(line)
