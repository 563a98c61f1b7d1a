import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from training.geometry import BoxError
from webapp.catalog.models import Dataset, Image
from webapp.regions.models import Region, RegionChange
from webapp.regions.services import RegionConflict, create_region, delete_region, update_region

pytestmark = pytest.mark.django_db


@pytest.fixture
def image():
    dataset = Dataset.objects.create(name="d")
    return Image.objects.create(dataset=dataset, sha256="a" * 64, width=100, height=80)


@pytest.fixture
def region(image):
    return Region.objects.create(
        image=image, image_width=100, image_height=80, x0=10, y0=10, x1=50, y1=40,
        phrase="dog", caption="a dog", origin="detector", score=0.6,
    )  # fmt: skip


def test_an_update_bumps_the_version_and_keeps_before_and_after(region):
    user = get_user_model().objects.create(username="ann")
    update_region(
        region_id=region.pk, expected_version=1, changes={"caption": "a brown dog"}, user=user
    )
    region.refresh_from_db()
    assert (region.caption, region.version) == ("a brown dog", 2)
    change = RegionChange.objects.get(region=region)
    assert change.user == user
    assert change.before["caption"] == "a dog"
    assert change.after["caption"] == "a brown dog"
    assert change.after["version"] == 2


def test_it_refuses_a_stale_version_and_writes_nothing(region):
    update_region(region_id=region.pk, expected_version=1, changes={"status": "accepted"})
    with pytest.raises(RegionConflict) as conflict:
        update_region(region_id=region.pk, expected_version=1, changes={"status": "rejected"})
    assert conflict.value.current["status"] == "accepted"
    region.refresh_from_db()
    assert region.status == "accepted"
    assert RegionChange.objects.filter(region=region).count() == 1


def test_a_box_outside_the_image_is_refused(region):
    with pytest.raises(BoxError):
        update_region(region_id=region.pk, expected_version=1, changes={"box": [0, 0, 101, 10]})
    region.refresh_from_db()
    assert region.version == 1


def test_the_database_itself_refuses_an_inverted_or_spilling_box(image):
    for box in ([50, 10, 10, 40], [10, 10, 120, 40], [-1, 10, 20, 40]):
        with pytest.raises(IntegrityError), transaction.atomic():
            x0, y0, x1, y1 = box
            Region.objects.create(
                image=image, image_width=100, image_height=80,
                x0=x0, y0=y0, x1=x1, y1=y1, origin="gt",
            )  # fmt: skip


def test_a_human_region_can_be_deleted_and_its_history_survives(image):
    drawn = create_region(image=image, box=[1, 2, 30, 40], phrase="cat")
    delete_region(region_id=drawn.pk, expected_version=1)
    assert not Region.objects.filter(pk=drawn.pk).exists()
    actions = list(RegionChange.objects.filter(region_id=drawn.pk).values_list("action", flat=True))
    assert actions == ["create", "delete"]


def test_a_detector_region_cannot_be_deleted(region):
    with pytest.raises(ValueError, match="reject"):
        delete_region(region_id=region.pk, expected_version=1)
    assert Region.objects.filter(pk=region.pk).exists()
