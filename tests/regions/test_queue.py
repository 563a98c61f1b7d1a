"""The review queue: filters, order, and leases that never hand one image to two annotators."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.catalog.factories import ImageFactory, RegionFactory, UserFactory
from tests.conftest import on_postgres
from tests.regions.conftest import detector_regions
from webapp.regions.models import Lease, Region
from webapp.regions.queue import BadFilter, QueueFilters, candidate_images
from webapp.regions.services import claim_next_image, release_lease, renew_lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(dataset, run):
    """Four images whose most uncertain region is 0.05, 0.40, 0.01 and (no score) None away."""
    out = [ImageFactory(dataset=dataset) for _ in range(4)]
    detector_regions(out[0], run, [0.40, 0.9])
    detector_regions(out[1], run, [0.75])
    detector_regions(out[2], run, [0.36])
    RegionFactory(image=out[3], origin=Region.Origin.GT, score=None)
    return out


def ids(images, *order):
    return [images[i].pk for i in order]


def candidates(dataset, user, **filters):
    return candidate_images(
        dataset.pk, QueueFilters(**filters), user_id=user.pk, now=timezone.now()
    )


def test_uncertainty_order_puts_scores_nearest_the_threshold_first(dataset, annotator, images):
    assert candidates(dataset, annotator) == ids(images, 2, 0, 1, 3)
    assert candidates(dataset, annotator, order="image") == ids(images, 0, 1, 2, 3)


def test_filters_narrow_the_queue(dataset, annotator, images, run):
    images[1].regions.update(flagged=True)
    images[0].regions.update(phrase="blue bus")
    assert candidates(dataset, annotator, origin="gt") == ids(images, 3)
    assert candidates(dataset, annotator, min_score=0.5, max_score=0.8) == ids(images, 1)
    assert candidates(dataset, annotator, phrase="BUS") == ids(images, 0)
    assert candidates(dataset, annotator, run=run.pk) == ids(images, 2, 0, 1)
    assert candidates(dataset, annotator, flagged=True) == ids(images, 1)


def test_reviewed_images_leave_the_queue(dataset, annotator, images):
    Region.objects.filter(image__in=images[:3]).update(status="accepted")
    assert candidates(dataset, annotator) == ids(images, 3)


def test_filters_read_from_a_query_string_and_refuse_bad_values():
    filters = QueueFilters.from_query({"min_score": "0.2", "flagged": "1", "order": "image"})
    assert filters.min_score == 0.2 and filters.flagged and filters.order == "image"
    assert QueueFilters.from_query(filters.as_query()) == filters
    for bad in ({"min_score": "x"}, {"origin": "robot"}, {"order": "random"}):
        with pytest.raises(BadFilter):
            QueueFilters.from_query(bad)


def test_two_annotators_get_different_images_and_a_released_one_comes_back(
    dataset, annotator, images
):
    bob = UserFactory(username="bob", roles=["annotator"])
    first = claim_next_image(dataset_id=dataset.pk, user=annotator)
    second = claim_next_image(dataset_id=dataset.pk, user=bob)
    assert (first, second) == (images[2].pk, images[0].pk)
    # Asking again resumes one's own lease rather than taking another image.
    assert claim_next_image(dataset_id=dataset.pk, user=annotator) == first
    assert release_lease(image_id=first, user=annotator)
    assert claim_next_image(dataset_id=dataset.pk, user=bob) == first
    # Bob holds one image at a time: taking a new one gave the old one back.
    assert list(Lease.objects.filter(user=bob).values_list("image_id", flat=True)) == [first]


def test_an_expired_lease_returns_the_image_to_the_pool(dataset, annotator, images, settings):
    settings.FGAM_LEASE_SECONDS = 60
    bob = UserFactory(username="bob", roles=["annotator"])
    mine = claim_next_image(dataset_id=dataset.pk, user=annotator)
    assert claim_next_image(dataset_id=dataset.pk, user=bob) != mine
    Lease.objects.filter(image_id=mine).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert not renew_lease(image_id=mine, user=annotator)
    carol = UserFactory(username="carol", roles=["annotator"])
    assert claim_next_image(dataset_id=dataset.pk, user=carol) == mine
    assert Lease.objects.get(image_id=mine).user == carol
    assert renew_lease(image_id=mine, user=carol)


def test_several_annotators_asking_at_once_never_share_an_image(dataset, images):
    people = [UserFactory(username=f"a{n}", roles=["annotator"]) for n in range(6)]
    got = [claim_next_image(dataset_id=dataset.pk, user=person) for person in people]
    assert sorted(g for g in got if g) == sorted(i.pk for i in images)
    assert got[4:] == [None, None]


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_on_postgresql_never_share_an_image(postgres, dataset, run):
    """Twelve threads, each with its own connection, claim from eight images at once."""
    assert on_postgres()
    images = [ImageFactory(dataset=dataset) for _ in range(8)]
    for image in images:
        detector_regions(image, run, [0.4])
    people = [UserFactory(username=f"t{n}", roles=["annotator"]) for n in range(12)]
    barrier = threading.Barrier(len(people))
    got: dict[int, int | None] = {}
    errors: list[BaseException] = []

    def work(person):
        try:
            barrier.wait()
            got[person.pk] = claim_next_image(dataset_id=dataset.pk, user=person)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = [image_id for image_id in got.values() if image_id is not None]
    assert sorted(claimed) == sorted(i.pk for i in images)
    assert Lease.objects.count() == 8
