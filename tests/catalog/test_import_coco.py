import io
import math

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from tests.catalog.import_helpers import (
    HEIGHT,
    WIDTH,
    coco_instances,
    image_bytes,
    row_counts,
    write_json,
)
from webapp.catalog.importing import import_coco
from webapp.catalog.models import Dataset, Image
from webapp.core.importing.report import ImportFailed
from webapp.jobs.models import Run
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "val2017"
    folder.mkdir()
    return folder


@pytest.fixture
def instances(images):
    return coco_instances(images)


def run_coco(tmp_path, images, instances, **kwargs):
    path = write_json(tmp_path / "instances_val2017.json", instances)
    return import_coco(dataset="coco", instances=path, images=images, **kwargs)


def test_it_imports_images_boxes_and_phrases(tmp_path, images, instances, media_root):
    report = run_coco(tmp_path, images, instances)

    assert (report.images_new, report.regions_new, report.errors) == (2, 4, [])
    image = Image.objects.get(dataset__name="coco", source_id="1")
    assert (image.width, image.height, image.format) == (WIDTH, HEIGHT, "PNG")
    assert (image.source, image.file_name, image.split) == ("coco", "000000000001.png", "val")
    assert image.metadata == {"license": 3}
    assert default_storage.open(image.storage_path).read() == image_bytes(1)
    cat = image.regions.get(phrase="cat")
    assert cat.box == [4, 4, 24, 14]
    assert (cat.caption, cat.origin, cat.status, cat.score) == ("cat", "gt", "pending", None)
    assert (cat.image_width, cat.image_height, cat.version) == (WIDTH, HEIGHT, 1)
    assert cat.source_key == "coco:ann:1"
    run = Run.objects.get(pk=report.run_id)
    assert (run.kind, run.status, run.summary["regions_new"]) == ("import", "succeeded", 4)
    assert run.parameters["format"] == "coco" and run.parameters["on_error"] == "abort"
    assert run.started_at <= run.finished_at
    assert image.run_id == cat.run_id == run.pk


def test_it_clips_a_box_spilling_a_few_pixels_and_counts_it(tmp_path, images, instances):
    instances["annotations"][1]["bbox"] = [-2, 20, 67, 29]  # 2 px left, 1 px right, 1 px down
    report = run_coco(tmp_path, images, instances)

    assert report.clipped_boxes == 1
    assert Region.objects.get(source_key="coco:ann:2").box == [0, 20, WIDTH, HEIGHT]


def test_it_keeps_crowd_annotations_flagged(tmp_path, images, instances):
    instances["annotations"][0]["iscrowd"] = 1
    report = run_coco(tmp_path, images, instances)

    assert report.crowd_flagged == 1
    crowd = Region.objects.get(source_key="coco:ann:1")
    assert (crowd.flagged, crowd.flag_reason) == (True, "crowd")
    assert Region.objects.filter(flagged=True).count() == 1


def test_it_gives_images_their_captions_stripped_deduplicated_in_id_order(
    tmp_path, images, instances
):
    captions = write_json(
        tmp_path / "captions_val2017.json",
        {
            "images": instances["images"],
            "annotations": [
                {"id": 9, "image_id": 1, "caption": "A cat on a mat.\n"},
                {"id": 3, "image_id": 1, "caption": "  A dog and a cat. "},
                {"id": 12, "image_id": 1, "caption": "A cat on a mat."},
            ],
        },
    )
    run_coco(tmp_path, images, instances, captions=captions)

    image = Image.objects.get(source_id="1")
    assert image.captions == ["A dog and a cat.", "A cat on a mat."]
    assert Image.objects.get(source_id="2").captions == []


def test_it_reads_the_size_from_the_file_when_the_annotation_lacks_it(tmp_path, images, instances):
    del instances["images"][0]["width"]
    instances["images"][0]["height"] = None
    run_coco(tmp_path, images, instances)

    assert Image.objects.get(source_id="1").width == WIDTH


def test_running_the_same_import_again_creates_no_duplicates(tmp_path, images, instances):
    run_coco(tmp_path, images, instances)
    before = row_counts()
    again = run_coco(tmp_path, images, instances)

    assert (again.images_new, again.images_existing) == (0, 2)
    assert (again.regions_new, again.regions_existing) == (0, 4)
    assert {k: v for k, v in row_counts().items() if k != "runs"} == {
        k: v for k, v in before.items() if k != "runs"
    }


def test_a_second_run_adds_new_annotations_and_captions_to_existing_images(
    tmp_path, images, instances
):
    run_coco(tmp_path, images, instances)
    instances["annotations"].append(
        {"id": 99, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}
    )
    captions = write_json(
        tmp_path / "captions.json",
        {"annotations": [{"id": 1, "image_id": 2, "caption": "Two animals."}]},
    )
    report = run_coco(tmp_path, images, instances, captions=captions)

    assert (report.regions_new, report.regions_existing) == (1, 4)
    assert Image.objects.get(source_id="2").captions == ["Two animals."]


def test_identical_files_under_two_ids_become_one_image(tmp_path, images, instances):
    (images / "copy.png").write_bytes((images / "000000000001.png").read_bytes())
    instances["images"].append({"id": 3, "file_name": "copy.png", "width": 64, "height": 48})
    instances["annotations"].append(
        {"id": 50, "image_id": 3, "category_id": 2, "bbox": [0, 0, 8, 8], "iscrowd": 0}
    )
    report = run_coco(tmp_path, images, instances)

    assert report.images_new == 2
    assert Image.objects.get(source_id="1").regions.count() == 3


def test_new_images_get_thumbnail_tasks_once_the_import_commits(
    tmp_path, images, instances, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run_coco(tmp_path, images, instances)

    assert len(callbacks) == 1  # one chunk of two image ids


def with_raw_text(text: bytes):
    def change(tmp_path, instances):
        (tmp_path / "instances_val2017.json").write_bytes(text)

    return change


def edit(function):
    """A case that changes the parsed instances before they are written out."""

    def change(tmp_path, instances):
        function(instances)
        write_json(tmp_path / "instances_val2017.json", instances)

    return change


def drop(record: dict, key: str) -> None:
    del record[key]


def set_box(index: int, bbox):
    return edit(lambda d: d["annotations"][index].__setitem__("bbox", bbox))


NOT_UTF8 = b'{"images": [], "annotations": [],\n "categories": [{"id": 1, "name": "caf\xe9"}]}'

MALFORMED = {
    "invalid JSON": (
        with_raw_text(b'{"images": [\n  {"id": 1,]\n}'),
        ["instances_val2017.json", "invalid JSON at line 2 column"],
    ),
    "non-UTF-8 text": (
        with_raw_text(NOT_UTF8),
        [
            "instances_val2017.json",
            f"not UTF-8 text: byte 0xe9 at byte offset {NOT_UTF8.find(233)}",
        ],
    ),
    "a missing top-level list": (
        edit(lambda d: d.pop("annotations")),
        ["instances_val2017.json", "annotations: missing"],
    ),
    "a missing bbox": (
        edit(lambda d: drop(d["annotations"][1], "bbox")),
        ["annotations[1] (id 2)", "bbox: missing"],
    ),
    "a missing file name": (
        edit(lambda d: drop(d["images"][1], "file_name")),
        ["images[1] (id 2)", "file_name: missing"],
    ),
    "a bbox of the wrong type": (
        set_box(0, "4,4,20,10"),
        ["annotations[0] (id 1)", "bbox: expected a list, got a string"],
    ),
    "a bbox with three numbers": (
        set_box(0, [1, 2, 3]),
        ["annotations[0] (id 1)", "bbox: expected [x, y, width, height]"],
    ),
    "a width of the wrong type": (
        edit(lambda d: d["images"][0].__setitem__("width", "64")),
        ["images[0] (id 1)", "width: expected a positive integer, got a string"],
    ),
    "an id of the wrong type": (
        edit(lambda d: d["annotations"][2].__setitem__("image_id", [1])),
        ["annotations[2] (id 3)", "image_id: expected an integer or string id"],
    ),
    "a box outside the image": (
        set_box(2, [100, 100, 10, 10]),
        ["annotations[2] (id 3)", "bbox: box [100, 100, 110, 110] lies", "outside the 64x48"],
    ),
    "a box with zero size": (
        set_box(3, [5, 5, 0, 10]),
        ["annotations[3] (id 4)", "bbox: box has zero or negative size"],
    ),
    "a box with negative size": (
        set_box(3, [20, 5, -10, 10]),
        ["annotations[3] (id 4)", "bbox: box has zero or negative size"],
    ),
    "a NaN coordinate": (
        set_box(0, [math.nan, 4, 20, 10]),
        ["annotations[0] (id 1)", "bbox: box has a non-finite coordinate"],
    ),
    "an unknown image id": (
        edit(lambda d: d["annotations"][0].__setitem__("image_id", 77)),
        ["annotations[0] (id 1)", "image_id: unknown image id 77"],
    ),
    "a duplicate image id": (
        edit(lambda d: d["images"][1].__setitem__("id", 1)),
        ["images[1] (id 1)", "id: duplicate image id, first at images[0] (id 1)"],
    ),
    "a duplicate annotation id": (
        edit(lambda d: d["annotations"][3].__setitem__("id", 2)),
        ["annotations[3] (id 2)", "id: duplicate annotation id, first at annotations[1]"],
    ),
    "an unknown category": (
        edit(lambda d: d["annotations"][0].__setitem__("category_id", 42)),
        ["annotations[0] (id 1)", "category_id: unknown category id 42"],
    ),
    "a size that disagrees with the file": (
        edit(lambda d: d["images"][1].__setitem__("width", 640)),
        ["images[1] (id 2)", "width: the annotation says 640x48", "is 64x48"],
    ),
    "a missing image file": (
        edit(lambda d: d["images"][0].__setitem__("file_name", "nowhere.png")),
        ["images[0] (id 1)", "file_name: image file not found", "nowhere.png"],
    ),
    "a path escaping the images folder": (
        edit(lambda d: d["images"][0].__setitem__("file_name", "../instances_val2017.json")),
        ["images[0] (id 1)", "file_name:", "points outside the images folder"],
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_it_rejects_malformed_input_naming_the_place_and_writes_nothing(
    case, tmp_path, images, instances, media_root
):
    change, expected = MALFORMED[case]
    change(tmp_path, instances)
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        import_coco(dataset="coco", instances=tmp_path / "instances_val2017.json", images=images)

    message = "\n".join(str(error) for error in failed.value.report.errors)
    for part in expected:
        assert part in message
    assert row_counts() == before
    assert not any(media_root.iterdir())  # no image bytes stored either


def test_a_corrupt_image_is_reported_and_nothing_is_written(tmp_path, images, instances):
    whole = (images / "000000000002.png").read_bytes()
    (images / "000000000002.png").write_bytes(whole[: len(whole) // 2])
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        run_coco(tmp_path, images, instances)

    (error,) = failed.value.report.errors
    assert (error.record, error.field) == ("images[1] (id 2)", "file_name")
    assert "000000000002.png" in error.reason
    assert "corrupt or truncated" in error.reason or "not a readable image" in error.reason
    assert row_counts() == before


def test_a_decompression_bomb_is_refused(tmp_path, images, instances):
    # 20000 x 20000 one-bit pixels: a small PNG that would decode to 400 million pixels.
    PILImage.new("1", (20000, 20000)).save(images / "000000000002.png")
    instances["images"][1].update(width=20000, height=20000)
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        run_coco(tmp_path, images, instances)

    (error,) = failed.value.report.errors
    assert error.record == "images[1] (id 2)"
    assert "decompression bomb" in error.reason
    assert row_counts() == before


def test_the_pixel_limit_comes_from_the_settings(tmp_path, images, instances, settings):
    settings.FGAM_MAX_IMAGE_PIXELS = 1000  # the 64 x 48 images have 3072

    with pytest.raises(ImportFailed) as failed:
        run_coco(tmp_path, images, instances)

    assert len(failed.value.report.errors) == 2
    assert all("exceeds the limit of 1000" in e.reason for e in failed.value.report.errors)


def test_a_bad_captions_file_is_reported_with_its_own_name(tmp_path, images, instances):
    captions = write_json(
        tmp_path / "captions_val2017.json",
        {"annotations": [{"id": 1, "image_id": 5, "caption": "A cat."}]},
    )
    with pytest.raises(ImportFailed) as failed:
        run_coco(tmp_path, images, instances, captions=captions)

    assert str(failed.value.report.errors[0]) == (
        f"{captions}: annotations[0] (id 1): image_id: image 5 is not in the instances file"
    )


def test_every_bad_record_is_reported_not_only_the_first(tmp_path, images, instances):
    instances["annotations"][0]["bbox"] = [0, 0, 0, 0]
    instances["annotations"][3]["category_id"] = 9

    with pytest.raises(ImportFailed) as failed:
        run_coco(tmp_path, images, instances)

    assert [e.record for e in failed.value.report.errors] == [
        "annotations[3] (id 4)",  # found while reading the file
        "annotations[0] (id 1)",  # found when fitting boxes to the images
    ]


def test_with_on_error_skip_it_imports_the_good_records_and_reports_the_bad(
    tmp_path, images, instances
):
    instances["annotations"][0]["bbox"] = [0, 0, 0, 5]
    (images / "000000000002.png").unlink()

    report = run_coco(tmp_path, images, instances, on_error="skip")

    assert (report.images_new, report.regions_new) == (1, 1)
    assert report.skipped_records == 4  # a box, an image, and the image's two boxes
    assert {e.record for e in report.errors} == {"annotations[0] (id 1)", "images[1] (id 2)"}
    assert list(Region.objects.values_list("source_key", flat=True)) == ["coco:ann:2"]
    run = Run.objects.get(pk=report.run_id)
    assert run.failed == 4 and len(run.errors) == 2


def test_a_dataset_name_that_is_not_a_slug_is_refused(tmp_path, images, instances):
    with pytest.raises(ImportFailed) as failed:
        path = write_json(tmp_path / "instances.json", instances)
        import_coco(dataset="my data/set", instances=path, images=images)

    assert "'my data/set' is not a valid dataset name" in str(failed.value)
    assert not Dataset.objects.exists()


def test_the_command_prints_a_summary(tmp_path, images, instances):
    path = write_json(tmp_path / "instances_val2017.json", instances)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_coco",
        "--dataset=coco-val",
        f"--instances={path}",
        f"--images={images}",
        stdout=out,
        stderr=err,
    )

    assert "coco import into dataset 'coco-val'" in out.getvalue()
    assert "images:    2 new, 0 already there" in out.getvalue()
    assert "regions:   4 new, 0 already there (0 boxes clipped, 0 crowd flagged)" in out.getvalue()
    assert Dataset.objects.get(name="coco-val").images.count() == 2


def test_the_command_prints_every_error_up_to_fifty_and_fails(tmp_path, images, instances):
    for annotation in instances["annotations"]:
        annotation["bbox"] = [0, 0, -1, 1]
    instances["annotations"] += [
        {**instances["annotations"][0], "id": 100 + i, "category_id": 7} for i in range(60)
    ]
    path = write_json(tmp_path / "instances_val2017.json", instances)
    err = io.StringIO()

    with pytest.raises(CommandError, match="coco import failed with 64 errors; nothing was"):
        call_command(
            "import_coco",
            "--dataset=coco-val",
            f"--instances={path}",
            f"--images={images}",
            stdout=io.StringIO(),
            stderr=err,
        )

    lines = err.getvalue().splitlines()
    assert lines[0].endswith("annotations[4] (id 100): category_id: unknown category id 7")
    assert lines[50] == "... and 14 more"
    assert not Dataset.objects.exists()


def test_the_command_reports_a_missing_instances_file(tmp_path, images):
    with pytest.raises(CommandError):
        call_command(
            "import_coco",
            "--dataset=coco",
            f"--instances={tmp_path / 'absent.json'}",
            f"--images={images}",
            stdout=io.StringIO(),
            stderr=(err := io.StringIO()),
        )

    assert "absent.json: file not found" in err.getvalue()


@pytest.mark.services
def test_on_postgres_the_query_count_does_not_grow_with_the_regions(
    postgres, tmp_path, images, django_assert_max_num_queries
):
    counts = []
    for boxes in (10, 200):
        data = coco_instances(images, count=5)
        data["annotations"] = [
            {"id": n, "image_id": n % 5 + 1, "category_id": 1, "bbox": [1, 1, 8, 8]}
            for n in range(1, boxes + 1)
        ]
        path = write_json(tmp_path / f"instances_{boxes}.json", data)
        with django_assert_max_num_queries(20) as captured:
            report = import_coco(dataset=f"q{boxes}", instances=path, images=images)
        assert report.regions_new == boxes
        counts.append(len(captured))
        sql = [q["sql"] for q in captured.captured_queries]
        # The images are new, so their regions cannot exist: they are copied straight in.
        assert any(s.startswith('COPY "regions_region"') for s in sql)
        assert not any(s.startswith('INSERT INTO "regions_region"') and "VALUES" in s for s in sql)
    assert counts[0] == counts[1]

    # Importing again with more boxes on the same images goes through the temporary table,
    # whose ON CONFLICT skips the boxes already there.
    data["annotations"] += [
        {"id": n, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]} for n in range(201, 211)
    ]
    path = write_json(tmp_path / "instances_more.json", data)
    with django_assert_max_num_queries(20) as captured:
        report = import_coco(dataset="q200", instances=path, images=images)
    assert (report.regions_new, report.regions_existing) == (10, 200)
    assert any(q["sql"].startswith('COPY "fgam_import_regions_region"') for q in captured)
