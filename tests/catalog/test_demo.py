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


def test_the_demo_stage2_data_is_true_to_the_boxes_and_safe_to_run_again(
    tmp_path, media_root, settings
):
    from training.geometry import spatial_relation
    from webapp.evaluation.models import Round
    from webapp.trajectories.models import Trajectory

    settings.VAR_DIR = tmp_path
    call_command("make_demo", images=12, out=tmp_path / "scenes", stdout=io.StringIO())
    call_command("make_demo_stage2", items=6, stdout=io.StringIO())
    call_command("make_demo_stage2", items=6, stdout=io.StringIO())

    trajectories = Trajectory.objects.prefetch_related("steps")
    assert trajectories.count() == 6
    for trajectory in trajectories:
        a, b = re.match(r"Where is the (.+) relative to the (.+)\?", trajectory.question).groups()
        box_a = Region.objects.get(image=trajectory.image, phrase=a).box
        box_b = Region.objects.get(image=trajectory.image, phrase=b).box
        first, last = list(trajectory.steps.all())
        truth = spatial_relation(tuple(box_a), tuple(box_b))
        assert f" {truth} " in last.response and f" {truth} " not in first.response
        assert first.error_types == ["spatial"]
    round_ = Round.objects.get(name="Demo round")
    assert round_.status == "open" and round_.items.count() == 6
    assert round_.systems.count() == 2
