from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from webapp.core.roles import ANNOTATOR, CURATOR


def make_user(username: str, *roles: str):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def annotator(db):
    return make_user("ann", ANNOTATOR)


@pytest.fixture
def curator(db):
    return make_user("cur", CURATOR)


@pytest.fixture
def client_for():
    """An API client logged in (by session) as the given user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def api(annotator, client_for) -> APIClient:
    """Any logged-in user may read the API; annotators are the least-privileged who do."""
    return client_for(annotator)


@pytest.fixture
def token_client(annotator) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=annotator)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client
