"""The editor queue: filters, and leases that never hand one trajectory to two editors."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.catalog.factories import ImageFactory, UserFactory
from tests.conftest import on_postgres
from tests.trajectories.factories import make_trajectory
from webapp.jobs.models import Run
from webapp.trajectories.models import TrajectoryLease
from webapp.trajectories.queue import BadFilter, QueueFilters, candidate_trajectories
from webapp.trajectories.services import claim_next, release_lease, renew_lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(dataset):
    return Run.objects.create(kind=Run.Kind.TRAJECTORY, dataset=dataset, model_id="m")


@pytest.fixture
def trajectories(image, run):
    """Four open trajectories (two seeded) and one approved, which never enters the queue."""
    out = [
        make_trajectory(image, chain=[("A.", "F.", ["spatial"])], seeded_error="spatial", run=run),
        make_trajectory(image, chain=[("A.", "F.", ["object", "attribute"])], status="in_review"),
        make_trajectory(image, chain=[("A.", "F.", []), ("B.", "", ["reasoning"])], run=run),
        make_trajectory(image, seeded_error="attribute"),
    ]
    make_trajectory(image, status="approved")
    return out


def candidates(dataset, user, **filters):
    return candidate_trajectories(
        dataset.pk, QueueFilters(**filters), user_id=user.pk, now=timezone.now()
    )


def ids(items, *order):
    return [items[i].pk for i in order]


def test_filters_narrow_the_queue(dataset, annotator, trajectories, run):
    assert candidates(dataset, annotator) == ids(trajectories, 0, 1, 2, 3)
    assert candidates(dataset, annotator, status="in_review") == ids(trajectories, 1)
    assert candidates(dataset, annotator, error_type="reasoning") == ids(trajectories, 2)
    assert candidates(dataset, annotator, error_type="attribute") == ids(trajectories, 1, 3)
    assert candidates(dataset, annotator, seeded_error="spatial") == ids(trajectories, 0)
    assert candidates(dataset, annotator, run=run.pk) == ids(trajectories, 0, 2)


def test_filters_read_from_a_query_string_and_refuse_bad_values():
    filters = QueueFilters.from_query({"error_type": "spatial", "run": "4", "status": ""})
    assert filters == QueueFilters(error_type="spatial", run=4)
    assert QueueFilters.from_query(filters.as_query()) == filters
    for bad, field in (({"status": "approved"}, "status"), ({"run": "x"}, "run"),
                       ({"error_type": "colour"}, "error_type")):  # fmt: skip
        with pytest.raises(BadFilter, match=field):
            QueueFilters.from_query(bad)


def test_two_editors_get_different_trajectories_and_a_released_one_comes_back(
    dataset, annotator, trajectories
):
    bob = UserFactory(username="bob", roles=["annotator"])
    first = claim_next(dataset_id=dataset.pk, user=annotator)
    second = claim_next(dataset_id=dataset.pk, user=bob)
    assert [first, second] == ids(trajectories, 0, 1)
    assert claim_next(dataset_id=dataset.pk, user=annotator) == first  # resumes its own
    assert release_lease(trajectory_id=first, user=annotator)
    assert claim_next(dataset_id=dataset.pk, user=bob) == first
    # One at a time: taking a new one gave the old one back.
    assert list(
        TrajectoryLease.objects.filter(user=bob).values_list("trajectory_id", flat=True)
    ) == [first]


def test_an_expired_lease_returns_the_trajectory_to_the_pool(
    dataset, annotator, trajectories, settings
):
    settings.FGAM_LEASE_SECONDS = 60
    mine = claim_next(dataset_id=dataset.pk, user=annotator)
    bob = UserFactory(username="bob", roles=["annotator"])
    assert claim_next(dataset_id=dataset.pk, user=bob) != mine
    TrajectoryLease.objects.filter(trajectory_id=mine).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert not renew_lease(trajectory_id=mine, user=annotator)
    carol = UserFactory(username="carol", roles=["annotator"])
    assert claim_next(dataset_id=dataset.pk, user=carol) == mine
    assert TrajectoryLease.objects.get(trajectory_id=mine).user == carol
    assert renew_lease(trajectory_id=mine, user=carol)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_on_postgresql_never_share_a_trajectory(postgres, dataset):
    """Twelve threads, each with its own connection, claim from eight trajectories at once."""
    assert on_postgres()
    image = ImageFactory(dataset=dataset)
    trajectories = [make_trajectory(image) for _ in range(8)]
    people = [UserFactory(username=f"t{n}", roles=["annotator"]) for n in range(12)]
    barrier = threading.Barrier(len(people))
    got: dict[int, int | None] = {}
    errors: list[BaseException] = []

    def work(person):
        try:
            barrier.wait()
            got[person.pk] = claim_next(dataset_id=dataset.pk, user=person)
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
    claimed = [pk for pk in got.values() if pk is not None]
    assert sorted(claimed) == sorted(t.pk for t in trajectories)
    assert TrajectoryLease.objects.count() == 8
