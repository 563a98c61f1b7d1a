import pytest

pytestmark = pytest.mark.django_db


def test_an_anonymous_page_request_goes_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/")


def test_an_anonymous_htmx_request_redirects_the_whole_page(client):
    response = client.get(
        "/datasets/x/", headers={"HX-Request": "true", "HX-Current-URL": "http://t/images/1/"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/login/?next=")
    assert "images/1/" in response["HX-Redirect"]


def test_an_anonymous_api_request_gets_401_not_a_redirect(client):
    assert client.get("/api/datasets/").status_code == 401


def test_the_roles_exist_after_migration(django_user_model):
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {"curator", "annotator", "rater"}
