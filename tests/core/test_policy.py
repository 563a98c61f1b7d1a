"""The access rules the matrix cannot show by status codes alone: refused uploads are never
read, the no-role page, throttled logins and tokens, and datasets restricted to named
annotators."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.api.factories import RunFactory
from tests.catalog.factories import RegionFactory, UserFactory, stored_image
from tests.trajectories.factories import make_trajectory
from webapp.catalog.models import Dataset, DatasetAccess, Image
from webapp.exports.models import DatasetVersion
from webapp.trajectories.models import Trajectory

pytestmark = pytest.mark.django_db

OPENED: list[str] = []


class SpyUploadHandler(TemporaryFileUploadHandler):
    """Records every uploaded file Django starts to write to disk."""

    def new_file(self, field_name, file_name, *args, **kwargs):
        OPENED.append(file_name)
        return super().new_file(field_name, file_name, *args, **kwargs)


@pytest.fixture
def spy(settings):
    OPENED.clear()
    settings.FILE_UPLOAD_HANDLERS = ["tests.core.test_policy.SpyUploadHandler"]
    return OPENED


def big_upload(name: str) -> SimpleUploadedFile:
    # Over Django's 2.5 MB in-memory limit, so a parsed body would go to a temporary file.
    return SimpleUploadedFile(name, b"{}\n" * (1024 * 1024), content_type="application/jsonl")


@pytest.fixture
def people(db):
    return {
        "nobody": UserFactory(username="nobody"),
        "rater": UserFactory(username="rita", roles=["rater"]),
        "ann": UserFactory(username="ann", roles=["annotator"]),
        "bob": UserFactory(username="bob", roles=["annotator"]),
        "cura": UserFactory(username="cura", roles=["curator"]),
    }


# --- Refused before the body is read ------------------------------------------------------------

UPLOADS = [
    ("/api/trajectories/import/", {"dataset": "d", "file": "x.jsonl"}),
    (
        "/api/datasets/imports/",
        {"dataset": "d", "format": "captions", "images": "i.zip", "file": "c.jsonl"},
    ),
    ("/trajectories/import", {"dataset": "d", "file": "x.jsonl"}),
]


@pytest.mark.parametrize("who", ["nobody", "rater", "ann"])
@pytest.mark.parametrize("url, form", UPLOADS)
def test_a_refused_upload_gets_403_and_nothing_of_it_is_read(people, spy, who, url, form):
    # Enforced CSRF, as a browser meets it: Django's CSRF check would parse the body first.
    client = Client(enforce_csrf_checks=True)
    client.force_login(people[who])
    data = {k: big_upload(v) if "." in v else v for k, v in form.items()}
    before = (Dataset.objects.count(), Image.objects.count(), Trajectory.objects.count())
    response = client.post(url, data)
    assert response.status_code == 403
    assert spy == []
    assert (Dataset.objects.count(), Image.objects.count(), Trajectory.objects.count()) == before


def test_a_refused_token_upload_gets_403_and_nothing_of_it_is_read(people, spy):
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=people['ann']).key}")
    response = client.post("/api/trajectories/import/", {"file": big_upload("t.jsonl")})
    assert response.status_code == 403
    assert spy == []


def test_a_curator_upload_is_still_read_and_checked(people, spy):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["cura"])
    # No CSRF token: refused by the CSRF check, which runs once the policy allowed the request.
    response = client.post("/api/trajectories/import/", {"file": big_upload("t.jsonl")})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    client = Client()
    client.force_login(people["cura"])
    response = client.post("/api/trajectories/import/", {"file": big_upload("t.jsonl")})
    assert response.status_code == 400  # read and validated: the dataset field is missing
    assert spy == ["t.jsonl"]


# --- No role --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/runs/", "/versions/", "/evaluation/", "/review/"])
def test_a_user_without_a_role_is_told_to_ask_a_curator_and_shown_nothing(people, client, url):
    RunFactory()
    client.force_login(people["nobody"])
    response = client.get(url)
    assert response.status_code == 403
    page = response.content.decode()
    assert "ask a curator" in page
    menu = page[page.index('<nav class="mainnav"') : page.index("</nav>")]
    assert "<a " not in menu


def test_the_api_tells_a_user_without_a_role_to_ask_a_curator(people, client):
    client.force_login(people["nobody"])
    response = client.get("/api/datasets/")
    assert response.status_code == 403
    assert "ask a curator" in response.json()["detail"]


def test_a_rater_fetches_an_items_image_through_the_seat_only(media_root, people, client):
    from tests.evaluation.conftest import make_round
    from webapp.evaluation.assignment import claim_next

    round_ = make_round()
    seat = claim_next(round_, people["rater"])
    image = seat.item.image
    image.storage_path = stored_image().storage_path
    image.save()
    client.force_login(people["rater"])
    assert client.get(f"/images/{image.pk}/file").status_code == 403
    assert client.get(f"/evaluation/assignments/{seat.pk}/image").status_code == 200
    assert client.get(f"/api/evaluation/assignments/{seat.pk}/").json()["image"]["url"] == (
        f"/evaluation/assignments/{seat.pk}/image"
    )
    other = UserFactory(username="other-rater", roles=["rater"])
    client.force_login(other)
    assert client.get(f"/evaluation/assignments/{seat.pk}/image").status_code == 404


# --- Throttles ------------------------------------------------------------------------------------


def test_login_attempts_are_throttled_with_a_clear_429(people, client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "2/min", "token": "2/min"},
    }
    for _ in range(2):
        assert client.post("/login/", {"username": "ann", "password": "wrong"}).status_code == 200
    response = client.post("/login/", {"username": "ann", "password": "correct horse battery"})
    assert response.status_code == 429
    assert "Too many login attempts" in response.content.decode()
    assert int(response["Retry-After"]) > 0
    assert client.get("/login/").status_code == 200  # the form itself is not counted


def test_token_requests_are_throttled_with_a_clear_429(people, client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "2/min", "token": "2/min"},
    }
    form = {"username": "ann", "password": "correct horse battery"}
    for _ in range(2):
        assert client.post("/api/auth/token/", form).status_code == 200
    response = client.post("/api/auth/token/", form)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Too many token requests from this address.")
    assert "Retry-After" in response


# --- Datasets restricted to named annotators -----------------------------------------------------


@pytest.fixture
def restricted(people, media_root):
    """A dataset open only to ann, with an image, region, trajectory, run and version."""
    dataset = Dataset.objects.create(name="secret", restricted=True)
    DatasetAccess.objects.create(dataset=dataset, user=people["ann"])
    image = stored_image(dataset, width=200, height=160)
    region = RegionFactory(image=image)
    trajectory = make_trajectory(image)
    run = RunFactory(dataset=dataset)
    version = DatasetVersion.objects.create(name="v-secret", status="ready")
    version.datasets.add(dataset)
    return {
        "dataset": dataset,
        "image": image,
        "region": region,
        "trajectory": trajectory,
        "run": run,
        "version": version,
    }


def urls_of(objects: dict) -> list[str]:
    d, i, r, t = objects["dataset"], objects["image"], objects["region"], objects["trajectory"]
    return [
        f"/datasets/{d.name}/",
        f"/images/{i.pk}/",
        f"/images/{i.pk}/file",
        f"/images/{i.pk}/thumb",
        f"/review/datasets/{d.name}/",
        f"/review/images/{i.pk}/",
        f"/review/regions/{r.pk}/history",
        f"/review/datasets/{d.name}/progress",
        f"/trajectories/datasets/{d.name}/",
        f"/trajectories/{t.pk}/",
        f"/runs/{objects['run'].pk}/",
        f"/versions/{objects['version'].pk}/",
        f"/api/datasets/{d.pk}/",
        f"/api/images/{i.pk}/",
        f"/api/regions/{r.pk}/",
        f"/api/trajectories/{t.pk}/",
        f"/api/runs/{objects['run'].pk}/",
        f"/api/versions/{objects['version'].pk}/",
        f"/api/versions/{objects['version'].pk}/download/",
    ]


def test_an_unlisted_annotator_gets_404_for_a_restricted_dataset_everywhere(
    restricted, people, client
):
    client.force_login(people["bob"])
    for url in urls_of(restricted):
        assert client.get(url).status_code == 404, url
    for url in ("/", "/review/", "/trajectories/", "/runs/", "/versions/"):
        assert b"secret" not in client.get(url).content, url
    for url in (
        "/api/datasets/",
        "/api/images/",
        "/api/regions/",
        "/api/trajectories/",
        "/api/runs/",
        "/api/versions/",
    ):
        assert client.get(url).json()["results"] == [], url
    # Nor can the queues hand it out, nor an edit reach it.
    assert client.post("/review/datasets/secret/start").status_code == 404
    assert client.post("/trajectories/datasets/secret/start").status_code == 404
    region = restricted["region"]
    answer = client.post(f"/review/regions/{region.pk}/action", {"action": "accept"})
    assert answer.status_code == 404
    region.refresh_from_db()
    assert region.status == "pending"


def test_a_listed_annotator_and_every_curator_still_see_it(restricted, people, client):
    for who in ("ann", "cura"):
        client.force_login(people[who])
        for url in urls_of(restricted):
            assert client.get(url).status_code in (200, 302), (who, url)


def test_a_curator_restricts_and_reopens_a_dataset_on_its_page(people, client):
    dataset = Dataset.objects.create(name="open-one")
    client.force_login(people["cura"])
    page = client.get("/datasets/open-one/").content.decode()
    assert 'action="/datasets/open-one/access"' in page and "bob" in page
    client.post("/datasets/open-one/access", {"restricted": "on", "annotators": people["ann"].pk})
    dataset.refresh_from_db()
    assert dataset.restricted
    assert list(dataset.access.values_list("user__username", flat=True)) == ["ann"]
    client.force_login(people["bob"])
    assert client.get("/datasets/open-one/").status_code == 404
    client.force_login(people["cura"])
    client.post("/datasets/open-one/access", {"annotators": people["ann"].pk})
    client.force_login(people["bob"])
    assert client.get("/datasets/open-one/").status_code == 200


def test_a_curator_sets_access_through_the_api_and_annotators_cannot(people, client):
    dataset = Dataset.objects.create(name="api-one")
    client.force_login(people["ann"])
    body = {"restricted": True, "annotators": ["ann"]}
    assert client.patch(f"/api/datasets/{dataset.pk}/", body, "application/json").status_code == 403
    client.force_login(people["cura"])
    response = client.patch(f"/api/datasets/{dataset.pk}/", body, "application/json")
    assert response.status_code == 200
    assert response.json()["restricted"] is True and response.json()["annotators"] == ["ann"]
    bad = client.patch(
        f"/api/datasets/{dataset.pk}/",
        {"restricted": True, "annotators": ["rita"]},
        "application/json",
    )
    assert bad.status_code == 400 and "annotators" in bad.json()
