from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.factories import DatasetFactory, ImageFactory, RegionFactory, RunFactory
from webapp.jobs.models import Run

pytestmark = pytest.mark.django_db


def walk(client, url: str) -> tuple[list[dict], int]:
    """Follow ``next`` links from ``url``; return every row seen and the number of pages."""
    rows, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        rows += body["results"]
        pages += 1
        url = body["next"] and urlsplit(body["next"])._replace(scheme="", netloc="").geturl()
    return rows, pages


def ids(rows: list[dict]) -> list[int]:
    return [row["id"] for row in rows]


@pytest.fixture
def scene():
    """Dataset ``a`` has 3 images with 7 regions of mixed status and origin; ``b`` has 1 and 1."""
    a, b = DatasetFactory(name="a"), DatasetFactory(name="b")
    images = ImageFactory.create_batch(3, dataset=a)
    other = ImageFactory(dataset=b)
    regions = [
        RegionFactory(image=images[0], status="accepted", origin="gt", score=None),
        RegionFactory(image=images[0], status="pending"),
        RegionFactory(image=images[1], status="rejected"),
        RegionFactory(image=images[1], status="accepted"),
        RegionFactory(image=images[2], status="pending", origin="human", score=None),
        RegionFactory(image=images[2], status="pending"),
        RegionFactory(image=images[2], status="accepted", origin="gt", score=None),
    ]
    regions.append(RegionFactory(image=other))
    return {"a": a, "b": b, "images": images, "other": other, "regions": regions}


@pytest.mark.parametrize("url", ["/api/datasets/", "/api/images/", "/api/regions/", "/api/runs/"])
def test_paging_through_next_visits_every_row_exactly_once(api, url):
    dataset = DatasetFactory()
    for image in ImageFactory.create_batch(7, dataset=dataset):
        RegionFactory(image=image)
    DatasetFactory.create_batch(6)
    RunFactory.create_batch(7, dataset=dataset)
    model = {"datasets": 7, "images": 7, "regions": 7, "runs": 7}

    rows, pages = walk(api, f"{url}?page_size=3")

    assert pages == 3
    assert len(rows) == model[url.split("/")[2]]
    assert ids(rows) == sorted(set(ids(rows)))


def test_a_dataset_shows_its_image_count(api, scene):
    rows, _ = walk(api, "/api/datasets/")
    assert {(r["name"], r["image_count"]) for r in rows} == {("a", 3), ("b", 1)}
    detail = api.get(f"/api/datasets/{scene['a'].pk}/").json()
    assert set(detail) == {
        "id", "name", "description", "created_at", "image_count", "restricted", "annotators",
    }  # fmt: skip
    # The access list is the curator's to read; an annotator sees only whether it is restricted.
    assert detail["restricted"] is False and detail["annotators"] is None
    assert detail["image_count"] == 3


def test_images_are_filtered_by_dataset_and_link_their_thumbnail_and_file(api, scene):
    rows, _ = walk(api, f"/api/images/?dataset={scene['a'].pk}")
    assert ids(rows) == [image.pk for image in scene["images"]]
    first = rows[0]
    assert first["dataset"] == scene["a"].pk
    assert first["width"] == 640
    assert first["captions"] == ["a scene"]
    assert first["thumbnail_url"] == f"http://testserver/images/{first['id']}/thumb"
    assert first["file_url"] == f"http://testserver/images/{first['id']}/file"


def test_a_region_carries_its_box_as_four_pixel_coordinates(api, scene):
    region = scene["regions"][1]
    body = api.get(f"/api/regions/{region.pk}/").json()
    assert body == {
        "id": region.pk,
        "image": region.image_id,
        "box": [10.0, 20.0, 110.0, 220.0],
        "phrase": "dog",
        "caption": "a brown dog",
        "score": 0.75,
        "origin": "detector",
        "status": "pending",
        "version": 1,
        "flagged": False,
        "run": None,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dataset={a}", [0, 1, 2, 3, 4, 5, 6]),
        ("dataset={b}", [7]),
        ("image={image1}", [2, 3]),
        ("dataset={a}&status=pending", [1, 4, 5]),
        ("dataset={a}&origin=gt", [0, 6]),
        ("status=accepted&origin=gt", [0, 6]),
        ("status=pending&origin=detector", [1, 5, 7]),
        ("dataset={a}&image={image2}&status=pending&origin=human", [4]),
        ("dataset={a}&status=&origin=", [0, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_regions_are_filtered_by_dataset_image_status_and_origin(api, scene, query, expected):
    query = query.format(a=scene["a"].pk, b=scene["b"].pk, **{
        f"image{i}": image.pk for i, image in enumerate(scene["images"])
    })  # fmt: skip
    rows, _ = walk(api, f"/api/regions/?{query}&page_size=2")
    assert ids(rows) == [scene["regions"][i].pk for i in expected]


def test_the_next_link_keeps_the_filters(api, scene):
    body = api.get(f"/api/regions/?dataset={scene['a'].pk}&status=pending&page_size=1").json()
    assert f"dataset={scene['a'].pk}" in body["next"]
    assert "status=pending" in body["next"]


@pytest.mark.parametrize(
    ("url", "param", "words"),
    [
        ("/api/regions/?dataset=abc", "dataset", "integer"),
        ("/api/regions/?image=1.5", "image", "integer"),
        ("/api/regions/?image=0", "image", "greater than or equal to 1"),
        ("/api/regions/?dataset=99999999999999999999999", "dataset", "less than or equal"),
        ("/api/regions/?status=done", "status", "not a valid choice"),
        ("/api/regions/?origin=robot", "origin", "not a valid choice"),
        ("/api/regions/?datset=1", "datset", "Unknown query parameter"),
        ("/api/images/?dataset=a", "dataset", "integer"),
        ("/api/runs/?status=finished", "status", "not a valid choice"),
        ("/api/runs/?kind=x", "kind", "not a valid choice"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(api, url, param, words):
    response = api.get(url)
    assert response.status_code == 400
    assert list(response.json()) == [param]
    assert words in response.json()[param][0]


def test_runs_show_progress_and_duration_and_filter_by_kind_and_status(api):
    dataset = DatasetFactory()
    finished = RunFactory(
        dataset=dataset,
        kind=Run.Kind.IMPORT,
        status=Run.Status.SUCCEEDED,
        total=4,
        done=3,
        failed=1,
        started_at="2025-01-01T00:00:00Z",
        finished_at="2025-01-01T00:01:30Z",
        errors=[{"record": 7, "reason": "bad box"}],
    )
    RunFactory(dataset=dataset, status=Run.Status.RUNNING)

    rows, _ = walk(api, f"/api/runs/?dataset={dataset.pk}&kind=import&status=succeeded")

    assert ids(rows) == [finished.pk]
    assert rows[0]["progress"] == 1.0
    assert rows[0]["duration"] == 90.0
    assert "errors" not in rows[0]
    detail = api.get(f"/api/runs/{finished.pk}/").json()
    assert detail["errors"] == [{"record": 7, "reason": "bad box"}]
    assert detail["model_id"] == "IDEA-Research/grounding-dino-tiny"


def test_an_unknown_id_is_a_404(api):
    for url in ("/api/datasets/", "/api/images/", "/api/regions/", "/api/runs/"):
        assert api.get(f"{url}12345/").status_code == 404


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def grow(n: int) -> None:
    """``n`` more datasets, each with one image, one region on it and one run."""
    for _ in range(n):
        run = RunFactory()
        RegionFactory(image=ImageFactory(dataset=run.dataset), run=run)


@pytest.mark.parametrize(
    "url",
    [
        "/api/datasets/",
        "/api/images/",
        "/api/regions/",
        "/api/regions/?status=pending&origin=detector",
        "/api/runs/",
    ],
)
def test_a_list_runs_the_same_few_queries_for_3_or_30_rows(
    token_client, django_assert_max_num_queries, url
):
    grow(3)
    small = count_queries(token_client, url)
    grow(27)
    with django_assert_max_num_queries(small):
        response = token_client.get(url)
    # The token with its user, the user's roles (every route checks the policy), then the
    # page itself, whatever the number of rows.
    assert small <= 3
    assert len(response.json()["results"]) == 30
