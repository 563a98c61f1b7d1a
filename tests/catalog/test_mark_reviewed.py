"""``manage.py mark_reviewed``: the exhaustive-review mark set and cleared in bulk."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.catalog.models import Image
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("mark_reviewed", *args, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def scene(db):
    dataset = DatasetFactory(name="street")
    done = ImageFactory(dataset=dataset)
    RegionFactory(image=done, status=Region.Status.ACCEPTED)
    RegionFactory(image=done, status=Region.Status.REJECTED)
    half = ImageFactory(dataset=dataset)
    RegionFactory(image=half, status=Region.Status.ACCEPTED)
    RegionFactory(image=half, status=Region.Status.PENDING)
    bare = ImageFactory(dataset=dataset)
    elsewhere = ImageFactory()
    RegionFactory(image=elsewhere, status=Region.Status.ACCEPTED)
    return {"dataset": dataset, "done": done, "half": half, "bare": bare, "other": elsewhere}


def marked() -> set[int]:
    return set(Image.objects.exhaustively_reviewed().values_list("pk", flat=True))


def test_all_with_accepted_marks_the_images_without_pending_regions(scene):
    user = UserFactory(username="cur", roles=["curator"])
    out = run("--dataset", "street", "--all-with-accepted", "--by", "cur")
    assert out == "marked 1, already marked 0, skipped with pending regions 1"
    assert marked() == {scene["done"].pk}
    scene["done"].refresh_from_db()
    assert scene["done"].exhaustively_reviewed_by == user

    again = run("--dataset", "street", "--all-with-accepted")
    assert again == "marked 0, already marked 1, skipped with pending regions 1"


def test_images_by_id_of_that_dataset_only(scene):
    ids = [str(scene[k].pk) for k in ("done", "bare", "other")]
    out = run("--dataset", "street", "--images", *ids)
    assert out == "marked 2, already marked 0, skipped with pending regions 0, not in street 1"
    assert marked() == {scene["done"].pk, scene["bare"].pk}
    image = Image.objects.get(pk=scene["bare"].pk)
    assert image.exhaustively_reviewed_by is None and image.is_exhaustively_reviewed


def test_undo_clears_the_mark(scene):
    run("--dataset", "street", "--all-with-accepted")
    out = run("--dataset", "street", "--all-with-accepted", "--undo")
    assert out == "cleared 1, not marked 1"
    assert marked() == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nowhere", "--all-with-accepted"], "no dataset named 'nowhere'"),
        (["--dataset", "street", "--all-with-accepted", "--by", "ghost"], "no user named"),
    ],
)
def test_unknown_names_are_errors(scene, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert marked() == set()
