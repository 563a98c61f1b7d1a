"""Every model is in the admin and its changelist and change pages load."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.catalog.factories import (
    DatasetFactory,
    ImageFactory,
    QuestionItemFactory,
    RegionFactory,
    UserFactory,
)
from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.jobs.models import Run
from webapp.regions.models import Region, RegionChange
from webapp.regions.services import update_region

pytestmark = pytest.mark.django_db

MODELS = [Dataset, Image, QuestionItem, Region, RegionChange, Run]


@pytest.fixture
def rows():
    dataset = DatasetFactory(name="admin-data")
    image = ImageFactory(dataset=dataset)
    region = RegionFactory(image=image, phrase="<b>dog</b>")
    update_region(region_id=region.pk, expected_version=1, changes={"status": "accepted"})
    QuestionItemFactory(image=image)
    Run.objects.create(kind=Run.Kind.IMPORT, dataset=dataset, total=10, done=4)
    return {m: m.objects.first() for m in MODELS}


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_changelist_and_change_page_load(staff_client, rows, model):
    assert admin.site.is_registered(model)
    opts = model._meta
    changelist = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == 1
    obj = rows[model]
    change = staff_client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    )
    assert change.status_code == 200


def test_search_and_filters_work_on_the_big_tables(staff_client, rows):
    image = rows[Image]
    url = reverse("admin:catalog_image_changelist")
    found = staff_client.get(url, {"q": image.sha256})
    assert list(found.context["cl"].result_list) == [image]
    assert staff_client.get(url, {"q": "nothing"}).context["cl"].result_count == 0
    regions = staff_client.get(reverse("admin:regions_region_changelist"), {"status": "accepted"})
    assert regions.context["cl"].result_count == 1
    assert b"&lt;b&gt;dog&lt;/b&gt;" in regions.content


def test_regions_and_their_history_cannot_be_edited_in_the_admin(staff_client, rows):
    region = rows[Region]
    response = staff_client.post(
        reverse("admin:regions_region_change", args=[region.pk]), {"phrase": "cat"}
    )
    assert response.status_code == 403
    region.refresh_from_db()
    assert region.phrase == "<b>dog</b>"
    assert staff_client.get(reverse("admin:regions_regionchange_add")).status_code == 403
