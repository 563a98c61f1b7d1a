import io
import json
import re

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from webapp.catalog.models import Dataset
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db


def test_demo_users_get_their_role_and_a_working_printed_password():
    out = io.StringIO()
    call_command("create_demo_users", stdout=out)
    passwords = dict(re.findall(r"(\w+)\s+password: (\S+)", out.getvalue()))
    assert set(passwords) == {"curator", "annotator", "rater"}
    for role, password in passwords.items():
        user = authenticate(username=role, password=password)
        assert user is not None, role
        assert list(user.groups.values_list("name", flat=True)) == [role]


def test_the_demo_dataset_is_imported_with_its_known_boxes(tmp_path, media_root):
    call_command("make_demo", images=24, out=tmp_path, stdout=io.StringIO())
    dataset = Dataset.objects.get(name="demo-scenes")
    instances = json.loads((tmp_path / "instances_demo.json").read_text())
    assert dataset.images.count() == 24
    regions = Region.objects.filter(image__dataset=dataset)
    assert regions.count() == len(instances["annotations"]) >= 48
    first = instances["annotations"][0]
    x, y, w, h = first["bbox"]
    image = dataset.images.get(source_id=str(first["image_id"]))
    assert image.regions.filter(x0=x, y0=y, x1=x + w, y1=y + h).exists()
    assert all(image.captions for image in dataset.images.all())
