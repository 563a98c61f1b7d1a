"""Fixtures for the review tests: people with roles, and images with detector regions."""

from __future__ import annotations

import pytest

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.jobs.models import Run
from webapp.regions.models import Region


@pytest.fixture
def annotator(db):
    return UserFactory(username="ann", roles=["annotator"])


@pytest.fixture
def dataset(db):
    return DatasetFactory(name="street")


@pytest.fixture
def run(dataset):
    return Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL,
        dataset=dataset,
        model_id="IDEA-Research/grounding-dino-tiny",
        parameters={"box_threshold": 0.35, "text_threshold": 0.25},
    )


def detector_regions(image, run, scores, **kw) -> list[Region]:
    return [
        RegionFactory(
            image=image, run=run, origin=Region.Origin.DETECTOR, score=score,
            x0=10 + i % 20, y0=20, x1=100 + i % 20, y1=80,
            phrase="red car", caption="a red car on the road", **kw,
        )
        for i, score in enumerate(scores)
    ]  # fmt: skip


@pytest.fixture
def image(dataset, run):
    image = ImageFactory(dataset=dataset)
    detector_regions(image, run, [0.9, 0.5])
    return image


@pytest.fixture
def client_as(client):
    def log_in(user):
        client.force_login(user)
        return client

    return log_in
