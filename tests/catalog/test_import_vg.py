import io

import pytest
from django.core.management import CommandError, call_command

from tests.catalog.import_helpers import HEIGHT, WIDTH, row_counts, write_image, write_json
from webapp.catalog.importing import import_vg
from webapp.catalog.models import Image
from webapp.core.importing.report import ImportFailed
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db

URL = "https://cs.stanford.edu/people/rak248/VG_100K_2/{}.jpg"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "vg"
    write_image(folder, "1.jpg", seed=1, fmt="JPEG")
    write_image(folder, "VG_100K_2/2.jpg", seed=2, fmt="JPEG")  # as the second zip unpacks
    return folder


@pytest.fixture
def image_data():
    return [
        {"image_id": 1, "url": URL.format(1), "width": WIDTH, "height": HEIGHT, "coco_id": 7,
         "flickr_id": None},
        {"id": 2, "url": URL.format(2), "width": WIDTH, "height": HEIGHT, "coco_id": None,
         "flickr_id": 99},
        {"image_id": 3, "url": URL.format(3), "width": 800, "height": 600},  # not described
    ]  # fmt: skip


def region(region_id, image_id, x, y, w, h, phrase="a red ball"):
    return {"region_id": region_id, "image_id": image_id, "phrase": phrase,
            "x": x, "y": y, "width": w, "height": h}  # fmt: skip


@pytest.fixture
def descriptions():
    return [
        {"id": 1, "regions": [region(10, 1, 2, 3, 10, 10), region(11, 1, 60, 40, 6, 9)]},
        {"id": 2, "regions": [region(20, 2, 0, 0, 64, 48, phrase=" the whole sky\n")]},
    ]


def run_vg(tmp_path, images, descriptions, image_data, **kwargs):
    return import_vg(
        dataset="vg",
        regions=write_json(tmp_path / "region_descriptions.json", descriptions),
        image_data=write_json(tmp_path / "image_data.json", image_data),
        images=images,
        **kwargs,
    )


def test_it_imports_region_phrases_as_captions_and_clips_spills(
    tmp_path, images, descriptions, image_data
):
    report = run_vg(tmp_path, images, descriptions, image_data)

    assert (report.images_new, report.regions_new, report.clipped_boxes) == (2, 3, 1)
    spill = Region.objects.get(source_key="vg:region:11")
    assert spill.box == [60, 40, WIDTH, HEIGHT]  # 60+6 and 40+9 spilled by 2 and 1 px
    sky = Region.objects.get(source_key="vg:region:20")
    assert (sky.phrase, sky.caption, sky.origin) == ("the whole sky", "the whole sky", "gt")
    first = Image.objects.get(source="vg", source_id="1")
    assert (first.uri, first.metadata, first.captions) == (URL.format(1), {"coco_id": 7}, [])
    assert Image.objects.get(source_id="2").file_name == "2.jpg"
    assert not Image.objects.filter(source_id="3").exists()


def test_running_it_again_creates_no_duplicates(tmp_path, images, descriptions, image_data):
    run_vg(tmp_path, images, descriptions, image_data)
    again = run_vg(tmp_path, images, descriptions, image_data)

    assert (again.images_new, again.regions_new, again.regions_existing) == (0, 0, 3)
    assert Region.objects.count() == 3


def test_a_zero_width_region_is_an_error_and_nothing_is_written(
    tmp_path, images, descriptions, image_data
):
    descriptions[0]["regions"][1]["width"] = 0
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        run_vg(tmp_path, images, descriptions, image_data)

    (error,) = failed.value.report.errors
    assert str(error) == (
        f"{tmp_path / 'region_descriptions.json'}: [0].regions[1] (region_id 11): "
        "x/y/width/height: box has zero or negative size: [60, 40, 60, 49]"
    )
    assert row_counts() == before


def test_with_skip_the_real_quirks_leave_the_good_regions(
    tmp_path, images, descriptions, image_data
):
    descriptions[0]["regions"][1]["height"] = 0
    descriptions[1]["regions"].append(region(21, 2, 500, 500, 10, 10))

    report = run_vg(tmp_path, images, descriptions, image_data, on_error="skip")

    assert report.regions_new == 2 and report.skipped_records == 2
    assert "lies outside the 64x48 image (no area inside it)" in str(report.errors[1])


def test_boxes_spilling_far_past_the_edge_are_clipped_and_one_outside_is_an_error(
    tmp_path, images, descriptions, image_data
):
    descriptions[0]["regions"] += [
        region(12, 1, 50, 10, 28, 10),  # x1 = 78: 14 px past the 64 px wide image
        region(13, 1, -200, 5, 230, 20),  # x0 = -200: 200 px past the left edge
        region(14, 1, 100, 60, 10, 10),  # wholly outside the 64x48 image
    ]

    report = run_vg(tmp_path, images, descriptions, image_data, on_error="skip")

    assert (report.regions_new, report.clipped_boxes, report.skipped_records) == (5, 3, 1)
    assert Region.objects.get(source_key="vg:region:12").box == [50, 10, WIDTH, 20]
    assert Region.objects.get(source_key="vg:region:13").box == [0, 5, 30, 25]
    (error,) = report.errors
    assert str(error) == (
        f"{tmp_path / 'region_descriptions.json'}: [0].regions[4] (region_id 14): "
        "x/y/width/height: box [100, 60, 110, 70] lies outside the 64x48 image "
        "(no area inside it)"
    )
    assert not Region.objects.filter(source_key="vg:region:14").exists()


def test_a_numeric_clip_tolerance_makes_the_import_strict(
    tmp_path, images, descriptions, image_data, settings
):
    settings.FGAM_BOX_CLIP_TOLERANCE = 4
    descriptions[0]["regions"].append(region(12, 1, 50, 10, 28, 10))

    with pytest.raises(ImportFailed) as failed:
        run_vg(tmp_path, images, descriptions, image_data)

    (error,) = failed.value.report.errors
    assert "(region_id 12)" in str(error)
    assert "lies 14 px outside the 64x48 image (at most 4 px is clipped)" in str(error)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d, i: d[1].update(id=5), "[1] (image id 5): id: image 5 is not"),
        (lambda d, i: d.append(d[0]), "[2] (image id 1): id: duplicate image id, first at [0]"),
        (
            lambda d, i: d[0]["regions"][0].update(image_id=2),
            "[0].regions[0] (region_id 10): image_id: is not the enclosing image's id 1",
        ),
        (
            lambda d, i: d[1]["regions"][0].update(region_id=10),
            "[1].regions[0] (region_id 10): region_id: duplicate region id, first at [0]",
        ),
        (lambda d, i: d[0]["regions"][0].pop("phrase"), "(region_id 10): phrase: missing"),
        (
            lambda d, i: d[0]["regions"][0].update(x="2"),
            "(region_id 10): x: expected a number, got a string '2'",
        ),
        (
            lambda d, i: i[0].update(width=640),
            "image_data.json: [0] (image_id 1): width: the annotation says 640x48",
        ),
        (lambda d, i: i[1].update(height=-3), "[1] (image_id 2): height: expected a positive"),
    ],
    ids=[
        "unknown image",
        "duplicate image",
        "mismatched image id",
        "duplicate region",
        "missing phrase",
        "wrong type",
        "wrong size",
        "negative size",
    ],
)
def test_it_rejects_malformed_records_and_writes_nothing(
    change, expected, tmp_path, images, descriptions, image_data
):
    change(descriptions, image_data)
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        run_vg(tmp_path, images, descriptions, image_data)

    assert any(expected in str(error) for error in failed.value.report.errors), [
        str(e) for e in failed.value.report.errors
    ]
    assert row_counts() == before


def test_a_missing_image_file_names_the_places_looked_at(
    tmp_path, images, descriptions, image_data
):
    (images / "1.jpg").unlink()

    with pytest.raises(ImportFailed) as failed:
        run_vg(tmp_path, images, descriptions, image_data)

    (error,) = failed.value.report.errors
    assert error.record == "[0] (image_id 1)"
    assert "image file not found" in error.reason and "VG_100K_2/1.jpg" in error.reason


def test_the_command_takes_the_two_files(tmp_path, images, descriptions, image_data):
    out = io.StringIO()
    call_command(
        "import_vg",
        "--dataset=vg",
        f"--regions={write_json(tmp_path / 'r.json', descriptions)}",
        f"--image-data={write_json(tmp_path / 'i.json', image_data)}",
        f"--images={images}",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "regions:   3 new, 0 already there (1 boxes clipped" in out.getvalue()

    (tmp_path / "r.json").write_text('{"oops": ')
    with pytest.raises(CommandError):
        call_command(
            "import_vg",
            "--dataset=vg",
            f"--regions={tmp_path / 'r.json'}",
            f"--image-data={tmp_path / 'i.json'}",
            f"--images={images}",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
