"""Tiny datasets with known objects, for the probe-set builder.

"zoo" (POPE), images with their accepted regions' names:

    I1 dog, cat, sofa      I2 dog, cat, tv        I3 dog, ball, grass
    I4 car, road, tree     I5 car, road, person   (all exhaustively reviewed)
    R6 dog, cat            reviewed, only two names: never a POPE candidate
    U1 dog, cat, apple, bird   NOT reviewed: never probed, but its names are vocabulary

Phrases are written unnormalised on purpose ("Dogs", "the cat") and one alias maps
"puppy" -> "dog", so the vocabulary layer is in the path. Pending and rejected regions
carry names that must never count ("unicorn", "zebra").

"yard" (spatial), one reviewed 400x200 image:

    dog (0,0,40,40), cat (200,0,240,40): dog left of cat
    ball (0,150,40,190): dog above ball, cat right of ball
    rug  (2,2,42,42): overlaps the dog (skipped); rug-cat left of, rug-ball above
    car (300,150,340,190) and car (350,0,390,40): the same name twice, never asked
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.catalog.factories import DatasetFactory, RegionFactory, stored_image
from webapp.catalog.models import VocabularyAlias
from webapp.regions.models import Region

ACCEPTED = Region.Status.ACCEPTED

ZOO = {
    "I1": ["Dogs", "the cat", "sofa"],
    "I2": ["puppy", "cat", "tv"],
    "I3": ["dog", "ball", "grass"],
    "I4": ["car", "road", "tree"],
    "I5": ["car", "road", "person"],
    "R6": ["dog", "cat"],
}
UNREVIEWED = {"U1": ["dog", "cat", "apple", "bird"]}


def _regions(image, phrases):
    for k, phrase in enumerate(phrases):
        x = 10.0 + 60 * k
        RegionFactory(image=image, x0=x, y0=10.0, x1=x + 40, y1=50.0, phrase=phrase,
                      status=ACCEPTED)  # fmt: skip


@pytest.fixture
def zoo(media_root, settings, tmp_path):
    """The "zoo" dataset; returns {"dataset": ..., "images": {label: Image}}."""
    settings.FGAM_PROBES_DIR = str(tmp_path / "probes")
    dataset = DatasetFactory(name="zoo")
    VocabularyAlias.objects.create(dataset=dataset, phrase="puppy", name="dog")
    images = {}
    now = timezone.now()
    for label, phrases in ZOO.items():
        image = stored_image(dataset, width=320, height=100, exhaustively_reviewed_at=now)
        _regions(image, phrases)
        # Never a name of the image: not accepted.
        RegionFactory(image=image, phrase="unicorn", status=Region.Status.PENDING)
        RegionFactory(image=image, phrase="zebra", status=Region.Status.REJECTED)
        images[label] = image
    for label, phrases in UNREVIEWED.items():
        image = stored_image(dataset, width=320, height=100)
        _regions(image, phrases)
        images[label] = image
    return {"dataset": dataset, "images": images}


@pytest.fixture
def yard(media_root, settings, tmp_path):
    settings.FGAM_PROBES_DIR = str(tmp_path / "probes")
    dataset = DatasetFactory(name="yard")
    image = stored_image(dataset, width=400, height=200, exhaustively_reviewed_at=timezone.now())
    for phrase, box in [
        ("dog", (0, 0, 40, 40)),
        ("cat", (200, 0, 240, 40)),
        ("ball", (0, 150, 40, 190)),
        ("rug", (2, 2, 42, 42)),
        ("car", (300, 150, 340, 190)),
        ("car", (350, 0, 390, 40)),
    ]:
        x0, y0, x1, y1 = box
        RegionFactory(image=image, x0=x0, y0=y0, x1=x1, y1=y1, phrase=phrase, status=ACCEPTED)
    unreviewed = stored_image(dataset, width=400, height=200)
    RegionFactory(image=unreviewed, x0=0, y0=0, x1=40, y1=40, phrase="kite", status=ACCEPTED)
    RegionFactory(image=unreviewed, x0=200, y0=0, x1=240, y1=40, phrase="bird", status=ACCEPTED)
    return {"dataset": dataset, "image": image, "unreviewed": unreviewed}
