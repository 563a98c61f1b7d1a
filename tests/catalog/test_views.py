"""The catalog pages: login wall, dataset list, image grid and the image page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.catalog.factories import (
    DatasetFactory,
    ImageFactory,
    QuestionItemFactory,
    RegionFactory,
    UserFactory,
    stored_image,
)
from webapp.catalog import views
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def user(db):
    return UserFactory(username="ann", roles=["annotator"])


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def rects(html: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'(\w[\w-]*)="([^"]*)"', tag)) for tag in re.findall(r"<rect\b[^>]*>", html)
    ]


# --- The login wall ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/datasets/anything/",
        "/images/1/",
        "/images/1/thumb",
        "/images/1/file",
    ],
)
def test_anonymous_users_are_sent_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_the_login_page_logs_a_user_in_and_sends_them_to_the_datasets(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="password"' in page.content
    assert b"Datasets" not in page.content  # no navigation for anonymous visitors

    response = client.post(
        reverse("login"), {"username": "ann", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("catalog:dataset_list")
    home = client.get(response["Location"])
    assert home.status_code == 200
    assert home.context["user"].username == "ann"


def test_a_wrong_password_shows_an_error(client, user):
    response = client.post(reverse("login"), {"username": "ann", "password": "nope"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content
    assert "_auth_user_id" not in client.session


def test_the_header_shows_the_user_roles_and_a_logout_form(logged_in):
    html = logged_in.get("/").content.decode()
    assert 'data-testid="current-user">ann<' in html
    assert '<span class="role">annotator</span>' in html
    assert re.search(r'<form method="post" action="/logout/"', html)
    assert "/admin/" not in html  # not staff


def test_logout_is_a_post_and_ends_the_session(logged_in):
    response = logged_in.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert logged_in.get("/").status_code == 302


# --- Dataset list -----------------------------------------------------------------------------


def make_dataset_with_content(name: str):
    dataset = DatasetFactory(name=name)
    first, second = ImageFactory.create_batch(2, dataset=dataset)
    ImageFactory(dataset=dataset)  # an image without regions
    RegionFactory(image=first, status=Region.Status.ACCEPTED)
    RegionFactory(image=first, status=Region.Status.ACCEPTED)
    RegionFactory(image=second, status=Region.Status.REJECTED)
    RegionFactory.create_batch(3, image=second)  # pending
    QuestionItemFactory(image=first)
    return dataset


def test_the_dataset_list_shows_counts(logged_in):
    make_dataset_with_content("coco-mini")
    DatasetFactory(name="empty-one")
    response = logged_in.get("/")
    html = response.content.decode()
    row = re.search(r'<tr data-dataset="coco-mini">(.*?)</tr>', html, re.S).group(1)
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', row))
    assert counts == {
        "images": "3",
        "regions": "6",
        "pending": "3",
        "accepted": "2",
        "rejected": "1",
        "questions": "1",
    }
    assert 'href="/datasets/coco-mini/"' in row
    empty = re.search(r'<tr data-dataset="empty-one">(.*?)</tr>', html, re.S).group(1)
    assert dict(re.findall(r'data-count="(\w+)">(\d+)<', empty))["images"] == "0"


def test_the_dataset_list_runs_the_same_queries_for_2_or_20_datasets(
    client, user, django_assert_num_queries
):
    for i in range(2):
        make_dataset_with_content(f"small-{i}")
    client.force_login(user)
    with django_assert_num_queries(5) as small:
        client.get("/")
    for i in range(18):
        make_dataset_with_content(f"more-{i}")
    with django_assert_num_queries(len(small.captured_queries)):
        response = client.get("/")
    assert response.content.count(b"<tr data-dataset=") == 20


def test_dataset_text_is_escaped(logged_in):
    DatasetFactory(name="evil", description="<script>alert(1)</script>")
    html = logged_in.get("/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- Image grid -------------------------------------------------------------------------------


def grid_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="tile" data-image="(\d+)"', html)]


def test_the_grid_pages_by_id_and_loads_more_with_htmx(logged_in, monkeypatch):
    monkeypatch.setattr(views, "GRID_PAGE_SIZE", 4)
    dataset = DatasetFactory(name="grid")
    images = ImageFactory.create_batch(10, dataset=dataset)
    ImageFactory.create_batch(3)  # another dataset's images never show
    ids = sorted(image.pk for image in images)

    first = logged_in.get("/datasets/grid/")
    html = first.content.decode()
    assert grid_ids(html) == ids[:4]
    assert "<html" in html
    next_url = f"/datasets/grid/?after={ids[3]}"
    assert f'href="{next_url}" hx-get="{next_url}"' in html
    assert "HX-Request" in first["Vary"]

    more = logged_in.get(next_url, **HTMX)
    fragment = more.content.decode()
    assert "<html" not in fragment and "<header" not in fragment
    assert fragment.lstrip().startswith("<li")
    assert grid_ids(fragment) == ids[4:8]
    assert "HX-Request" in more["Vary"]

    last = logged_in.get(f"/datasets/grid/?after={ids[7]}", **HTMX).content.decode()
    assert grid_ids(last) == ids[8:]
    assert "Load more" not in last


def test_the_grid_shows_region_counts_captions_and_filters_by_split(logged_in):
    dataset = DatasetFactory(name="splits")
    train = ImageFactory(dataset=dataset, split="train", captions=["two dogs <b>playing</b>"])
    val = ImageFactory(dataset=dataset, split="val")
    RegionFactory.create_batch(3, image=train)

    html = logged_in.get("/datasets/splits/").content.decode()
    tile = re.search(rf'data-image="{train.pk}">(.*?)</li>', html, re.S).group(1)
    assert 'title="two dogs &lt;b&gt;playing&lt;/b&gt;"' in tile
    assert '<span class="badge" title="regions">3<' in tile

    only_val = logged_in.get("/datasets/splits/?split=val").content.decode()
    assert grid_ids(only_val) == [val.pk]
    assert logged_in.get("/datasets/splits/?split=bogus").status_code == 404
    assert logged_in.get("/datasets/splits/?after=x").status_code == 404
    assert logged_in.get("/datasets/missing/").status_code == 404


def test_the_grid_runs_a_fixed_number_of_queries_per_page(
    logged_in, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(views, "GRID_PAGE_SIZE", 30)
    dataset = DatasetFactory(name="many")
    for image in ImageFactory.create_batch(40, dataset=dataset):
        RegionFactory(image=image)
    with django_assert_max_num_queries(5):
        response = logged_in.get("/datasets/many/")
    assert len(grid_ids(response.content.decode())) == 30


def test_an_image_without_stored_bytes_shows_a_placeholder_in_the_grid(logged_in):
    dataset = DatasetFactory(name="refs")
    ImageFactory(dataset=dataset, uri="s3://elsewhere/a.jpg")
    html = logged_in.get("/datasets/refs/").content.decode()
    assert "img/no-image.svg" in html


# --- Image page -------------------------------------------------------------------------------


def test_the_image_page_draws_one_rect_per_region_at_its_box(logged_in):
    image = ImageFactory(width=640, height=480)
    a = RegionFactory(image=image, x0=10, y0=20, x1=110, y1=80, score=0.876)
    b = RegionFactory(image=image, x0=300.5, y0=0, x1=640, y1=480, status="accepted", flagged=True)
    c = RegionFactory(image=image, x0=0, y0=100, x1=50, y1=150, status="rejected", score=None)
    html = logged_in.get(f"/images/{image.pk}/").content.decode()

    assert 'viewBox="0 0 640 480"' in html
    drawn = {int(r["data-region"]): r for r in rects(html)}
    assert set(drawn) == {a.pk, b.pk, c.pk}
    assert {k: drawn[a.pk][k] for k in ("x", "y", "width", "height")} == {
        "x": "10",
        "y": "20",
        "width": "100",
        "height": "60",
    }
    assert {k: drawn[b.pk][k] for k in ("x", "y", "width", "height")} == {
        "x": "300.5",
        "y": "0",
        "width": "339.5",
        "height": "480",
    }
    assert f'<g class="box s-accepted flagged" data-region="{b.pk}">' in html
    assert f'<g class="box s-rejected" data-region="{c.pk}">' in html
    row_a = re.search(rf'<tr data-region="{a.pk}".*?</tr>', html, re.S).group(0)
    assert "0.88" in row_a and "gt" in row_a and "pending" in row_a
    row_c = re.search(rf'<tr data-region="{c.pk}".*?</tr>', html, re.S).group(0)
    assert '<td class="num">—</td>' in row_c


def test_model_text_on_the_image_page_is_escaped(logged_in):
    evil = "<script>alert('x')</script>"
    image = ImageFactory(captions=[evil], file_name="ok.png")
    RegionFactory(image=image, phrase=evil, caption=evil, flagged=True, flag_reason=evil)
    QuestionItemFactory(image=image, question=evil, reference=evil)
    html = logged_in.get(f"/images/{image.pk}/").content.decode()
    assert "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 5


def test_the_region_list_filters_by_status_and_origin_with_htmx(logged_in):
    image = ImageFactory()
    pending = RegionFactory(image=image, origin="detector", score=0.5)
    accepted = RegionFactory(image=image, status="accepted")
    RegionFactory(image=image, status="rejected", origin="detector")

    response = logged_in.get(f"/images/{image.pk}/?status=pending", **HTMX)
    fragment = response.content.decode()
    assert "<html" not in fragment and "Captions" not in fragment
    assert [int(r["data-region"]) for r in rects(fragment)] == [pending.pk]
    assert "HX-Request" in response["Vary"]
    # The chips keep the other filter and carry both href and hx-get.
    url = f"/images/{image.pk}/?status=pending&amp;origin=detector"
    assert f'href="{url}" hx-get="{url}"' in fragment

    both = logged_in.get(f"/images/{image.pk}/?status=accepted&origin=gt").content.decode()
    assert [int(r["data-region"]) for r in rects(both)] == [accepted.pk]
    assert logged_in.get(f"/images/{image.pk}/?status=nope").status_code == 404


def test_the_image_page_shows_metadata_questions_and_neighbours(logged_in):
    dataset = DatasetFactory(name="nav")
    first, middle, last = ImageFactory.create_batch(3, dataset=dataset, split="val")
    ImageFactory()  # other dataset
    QuestionItemFactory(image=middle, question="How many cars?", reference=None)
    html = logged_in.get(f"/images/{middle.pk}/").content.decode()
    assert f'rel="prev" href="/images/{first.pk}/"' in html
    assert f'rel="next" href="/images/{last.pk}/"' in html
    assert middle.sha256 in html
    assert "640 \u00d7 480 px" in html
    assert "How many cars?" in html and "no reference answer" in html
    first_html = logged_in.get(f"/images/{first.pk}/").content.decode()
    assert 'rel="prev"' not in first_html


def test_the_image_page_runs_a_fixed_number_of_queries(logged_in, django_assert_max_num_queries):
    image = ImageFactory()
    RegionFactory.create_batch(25, image=image)
    QuestionItemFactory.create_batch(3, image=image)
    with django_assert_max_num_queries(10):
        response = logged_in.get(f"/images/{image.pk}/")
    assert len(rects(response.content.decode())) == 25


def test_an_image_without_bytes_shows_a_placeholder_and_its_boxes(logged_in, media_root):
    image = ImageFactory(uri="/data/offline/a.jpg")
    RegionFactory(image=image)
    response = logged_in.get(f"/images/{image.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "No stored file" in html and len(rects(html)) == 1
    assert logged_in.get(f"/images/{image.pk}/file").status_code == 404
    thumb = logged_in.get(f"/images/{image.pk}/thumb")
    assert thumb.status_code == 302 and thumb["Location"].endswith("img/no-image.svg")


def test_a_reference_image_with_a_url_redirects_to_it(logged_in):
    image = ImageFactory(uri="https://images.example.org/a.jpg")
    response = logged_in.get(f"/images/{image.pk}/file")
    assert response.status_code == 302
    assert response["Location"] == "https://images.example.org/a.jpg"


# --- Original bytes ---------------------------------------------------------------------------


def test_the_original_file_is_served_with_its_content_type(logged_in, media_root):
    image = stored_image(file_name="photos/cat.png")
    response = logged_in.get(f"/images/{image.pk}/file")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    body = b"".join(response.streaming_content)
    assert body == (media_root / image.storage_path).read_bytes()
    assert response["ETag"] == f'"{image.sha256}-file"'
    assert "max-age" in response["Cache-Control"] and "private" in response["Cache-Control"]
    again = logged_in.get(f"/images/{image.pk}/file", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_a_missing_stored_file_is_a_404_not_a_500(logged_in, media_root):
    image = stored_image()
    (media_root / image.storage_path).unlink()
    assert logged_in.get(f"/images/{image.pk}/file").status_code == 404
    assert logged_in.get(f"/images/{image.pk}/thumb").status_code == 302
    assert logged_in.get(f"/images/{image.pk}/").status_code == 200
