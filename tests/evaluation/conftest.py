"""Fixtures for the evaluation tests: people with roles, and a round whose systems carry
distinctive names so that any leak of system identity is easy to find."""

from __future__ import annotations

import pytest

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.evaluation import services
from webapp.evaluation.models import EvalItem, Response, Round, System
from webapp.regions.models import Region

SYSTEM_NAMES = ("ZEBRA-SYSTEM-ALPHA", "QUOKKA-SYSTEM-BETA", "NARWHAL-SYSTEM-GAMMA")


# Distinctive ids, so that a test can assert they appear nowhere in what raters receive.
SYSTEM_ID_BASE = 987_650
RESPONSE_ID_BASE = 876_540_000


def make_round(
    *,
    items: int = 4,
    systems=SYSTEM_NAMES,
    name: str = "round one",
    open_it: bool = True,
    distinctive_ids: bool = False,
    **kw,
) -> Round:
    """A round of ``items`` items, a response of every system to each, opened unless told.

    With ``distinctive_ids`` systems and responses get ids no page would show by chance.
    """
    dataset = DatasetFactory()
    round_ = services.create_round(name=name, seed=7, **kw)
    made = [
        System.objects.create(
            round=round_, name=n, **({"pk": SYSTEM_ID_BASE + i} if distinctive_ids else {})
        )
        for i, n in enumerate(systems)
    ]
    for position in range(items):
        image = ImageFactory(dataset=dataset, source="vg" if position % 2 else "coco")
        RegionFactory(image=image, status=Region.Status.ACCEPTED, phrase="red car")
        item = EvalItem.objects.create(
            round=round_, key=f"item-{position}", image=image, position=position,
            question=f"Where is the red car in picture {position}?", reference="On the left.",
        )  # fmt: skip
        for n, system in enumerate(made):
            extra = {"pk": RESPONSE_ID_BASE + 100 * position + n} if distinctive_ids else {}
            Response.objects.create(
                item=item,
                system=system,
                text=f"Answer {n} to item {position}: it is on the left.",
                **extra,
            )
    if open_it:
        services.open_round(round_=round_)
    return round_


@pytest.fixture
def curator(db):
    return UserFactory(username="cura", roles=["curator"])


@pytest.fixture
def rater(db):
    return UserFactory(username="rita", roles=["rater"])


@pytest.fixture
def annotator(db):
    return UserFactory(username="ann", roles=["annotator"])


@pytest.fixture
def round_(db):
    return make_round()


@pytest.fixture
def client_as(client):
    def log_in(user):
        client.force_login(user)
        return client

    return log_in
