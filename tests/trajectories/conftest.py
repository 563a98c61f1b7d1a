"""Fixtures for the trajectory tests: people with roles, an image with regions, trajectories."""

from __future__ import annotations

import pytest

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from tests.trajectories.factories import make_trajectory


@pytest.fixture
def annotator(db):
    return UserFactory(username="ann", roles=["annotator"])


@pytest.fixture
def curator(db):
    return UserFactory(username="cur", roles=["curator"])


@pytest.fixture
def rater(db):
    return UserFactory(username="rat", roles=["rater"])


@pytest.fixture
def dataset(db):
    return DatasetFactory(name="street")


@pytest.fixture
def image(dataset):
    image = ImageFactory(dataset=dataset)
    RegionFactory(image=image, phrase="car", x0=10, y0=200, x1=200, y1=300, status="accepted")
    RegionFactory(image=image, phrase="tree", x0=300, y0=50, x1=420, y1=300)
    return image


@pytest.fixture
def trajectory(image):
    return make_trajectory(image)


@pytest.fixture
def client_as(client):
    def log_in(user):
        client.force_login(user)
        return client

    return log_in
