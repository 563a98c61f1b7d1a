import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.api.factories import DatasetFactory

pytestmark = pytest.mark.django_db

LISTS = ["/api/datasets/", "/api/images/", "/api/regions/", "/api/runs/"]


@pytest.mark.parametrize("url", [*LISTS, "/api/schema/", "/api/docs/"])
def test_an_anonymous_caller_is_refused_with_401(url):
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Token")


def test_a_wrong_token_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/datasets/").status_code == 401


def test_a_token_in_the_authorization_header_authenticates(token_client):
    DatasetFactory(name="coco")
    response = token_client.get("/api/datasets/")
    assert response.status_code == 200
    assert [d["name"] for d in response.json()["results"]] == ["coco"]


def test_a_browser_session_authenticates(api):
    DatasetFactory(name="coco")
    assert api.get("/api/datasets/").json()["results"][0]["name"] == "coco"


def test_an_anonymous_caller_trades_username_and_password_for_a_token(annotator):
    response = APIClient().post(
        "/api/auth/token/", {"username": "ann", "password": "pw-ann"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=annotator).key

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get("/api/runs/").status_code == 200


def test_a_wrong_password_gets_no_token(annotator):
    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "nope"})
    assert response.status_code == 400
    assert not Token.objects.exists()


def test_a_logged_in_browser_gets_a_token_without_a_csrf_token(annotator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(annotator)
    response = client.post("/api/auth/token/", {"username": "ann", "password": "pw-ann"})
    assert response.status_code == 200
