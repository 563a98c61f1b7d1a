"""Handing items to raters: three distinct raters per item, leases, balance, concurrency."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.catalog.factories import UserFactory
from tests.evaluation.conftest import make_round
from webapp.evaluation.assignment import (
    NotYours,
    RatingInput,
    claim_next,
    response_order,
    submit_ratings,
)
from webapp.evaluation.models import Assignment, Rating, RatingChange


def full_inputs(assignment, value: int = 4) -> list[RatingInput]:
    scores = {"localization": value, "coherence": value, "quality": value}
    return [RatingInput(slot=s, scores=dict(scores)) for s in range(1, len(assignment.order) + 1)]


def rate(assignment, user, value: int = 4):
    return submit_ratings(
        assignment_id=assignment.pk, rater=user, inputs=full_inputs(assignment, value)
    )


def test_it_gives_each_item_three_distinct_raters_and_then_nothing(db):
    round_ = make_round(items=2)
    raters = [UserFactory(roles=["rater"]) for _ in range(4)]
    seen = defaultdict(set)
    for _ in range(3):
        for user in raters:
            assignment = claim_next(round_, user)
            if assignment is None:
                continue
            assert user.pk not in seen[assignment.item_id]
            seen[assignment.item_id].add(user.pk)
            rate(assignment, user)
    assert {k: len(v) for k, v in seen.items()} == {i.pk: 3 for i in round_.items.all()}
    assert all(claim_next(round_, user) is None for user in raters)


def test_a_pending_item_counts_and_is_returned_again_to_its_rater(round_, rater):
    first = claim_next(round_, rater)
    again = claim_next(round_, rater)
    assert again.pk == first.pk and again.order == first.order


def test_a_lapsed_lease_hands_the_seat_to_another_rater(db):
    round_ = make_round(items=1, raters_per_item=1)
    slow, quick = UserFactory(roles=["rater"]), UserFactory(roles=["rater"])
    held = claim_next(round_, slow)
    assert claim_next(round_, quick) is None  # the only seat is taken
    Assignment.objects.filter(pk=held.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    taken = claim_next(round_, quick)
    assert taken.pk == held.pk and taken.rater_id == quick.pk and taken.handovers == 1
    with pytest.raises(NotYours):
        rate(held, slow)
    rate(taken, quick)
    assert Rating.objects.filter(assignment=taken).count() == 3


def test_the_least_rated_item_goes_first(db):
    round_ = make_round(items=3)
    a, b, c = (UserFactory(roles=["rater"]) for _ in range(3))
    items = [claim_next(round_, user).item_id for user in (a, b, c)]
    assert len(set(items)) == 3  # every item gets a first rater before any gets a second


def test_the_order_is_seeded_per_rater_and_item_and_recorded(round_, rater):
    assignment = claim_next(round_, rater)
    ids = list(assignment.item.responses.values_list("pk", flat=True))
    assert assignment.order == response_order(
        seed=round_.seed, rater_id=rater.pk, item_id=assignment.item_id, response_ids=ids
    )
    orders = {
        tuple(
            response_order(
                seed=round_.seed, rater_id=r, item_id=assignment.item_id, response_ids=ids
            )
        )
        for r in range(20)
    }
    assert len(orders) > 1  # raters see different orders


def test_a_revision_keeps_the_history(round_, rater):
    assignment = claim_next(round_, rater)
    rate(assignment, rater, 2)
    inputs = full_inputs(assignment, 2)
    inputs[0].scores["quality"] = 5
    inputs[0].version = 1
    submit_ratings(assignment_id=assignment.pk, rater=rater, inputs=inputs)
    first = Rating.objects.get(assignment=assignment, response_id=assignment.order[0])
    assert first.version == 2 and first.scores["quality"] == 5
    changes = list(RatingChange.objects.filter(rating=first).order_by("version"))
    assert [c.version for c in changes] == [1, 2]
    assert (
        changes[1].before["scores"]["quality"] == 2 and changes[1].after["scores"]["quality"] == 5
    )


@pytest.mark.django_db(transaction=True)
def test_thirty_raters_asking_at_once_never_over_assign(postgres):
    round_ = make_round(items=40)
    raters = [UserFactory(roles=["rater"]) for _ in range(30)]
    errors: list[str] = []
    rated: list[tuple[int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(raters))

    def work(user):
        try:
            barrier.wait()
            while True:
                assignment = claim_next(round_, user)
                if assignment is None:
                    return
                rate(assignment, user)
                with lock:
                    rated.append((assignment.item_id, user.pk))
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    per_item = Counter(item for item, _ in rated)
    assert set(per_item.values()) == {3} and len(per_item) == 40
    assert len(set(rated)) == len(rated)  # nobody rated an item twice
    done = Assignment.objects.filter(round=round_, status="done")
    assert done.count() == 120
    for item in round_.items.all():
        raters_of_item = list(done.filter(item=item).values_list("rater_id", flat=True))
        assert len(raters_of_item) == len(set(raters_of_item)) == 3


def test_a_rater_whose_seat_was_handed_on_is_told_and_nothing_is_saved(db, client):
    from django.urls import reverse

    round_ = make_round(items=1, raters_per_item=1)
    slow, quick = UserFactory(roles=["rater"]), UserFactory(roles=["rater"])
    held = claim_next(round_, slow)
    Assignment.objects.filter(pk=held.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    claim_next(round_, quick)
    client.force_login(slow)
    form = {f"r{s}-{c}": "2" for s in (1, 2, 3) for c in ("localization", "coherence", "quality")}
    answer = client.post(reverse("evaluation:rate", args=[held.pk]), form)
    assert answer.status_code == 409
    assert "handed to another rater" in answer.content.decode()
    assert not Rating.objects.exists()
    assert client.get(reverse("evaluation:rate", args=[held.pk])).status_code == 404
