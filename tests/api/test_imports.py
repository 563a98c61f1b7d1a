import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from webapp.catalog import api as catalog_api
from webapp.catalog.api import UnsafeArchive, extract_zip
from webapp.catalog.models import Dataset, Image
from webapp.jobs.models import Run
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db

URL = "/api/datasets/imports/"


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def coco(**overrides) -> dict:
    data = {
        "images": [
            {"id": 1, "file_name": "red.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "blue.png", "width": 32, "height": 32},
        ],
        "categories": [{"id": 7, "name": "ball"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [4, 6, 20, 10], "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 7, "bbox": [0, 0, 16, 16], "iscrowd": 0},
        ],
    }
    data.update(overrides)
    return data


def upload(client, *, instances: bytes | dict | None = None, images: bytes | None = None, **form):
    """POST a COCO import; by default two valid images and their annotations."""
    if images is None:
        images = zipped({"red.png": png(64, 48, "red"), "blue.png": png(32, 32, "blue")})
    if instances is None or isinstance(instances, dict):
        instances = json.dumps(instances or coco()).encode()
    files = {
        "instances": SimpleUploadedFile("instances_val.json", instances),
        "images": SimpleUploadedFile("images.zip", images),
    }
    return client.post(URL, {"dataset": "balls", "format": "coco", **files, **form})


def test_a_curator_uploads_a_coco_file_and_a_zip_of_images(curator, client_for, media_root):
    response = upload(client_for(curator))

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["counts"]["images_new"] == 2
    assert body["counts"]["regions_new"] == 2
    assert body["errors"] == []
    dataset = Dataset.objects.get(name="balls")
    assert {i.file_name: (i.width, i.height) for i in Image.objects.filter(dataset=dataset)} == {
        "red.png": (64, 48),
        "blue.png": (32, 32),
    }
    assert sorted(r.box for r in Region.objects.filter(image__dataset=dataset)) == [
        [0, 0, 16, 16],
        [4, 6, 24, 16],
    ]
    assert Run.objects.get(pk=body["run"]).created_by == curator
    assert any(media_root.rglob("*.png")), "the image bytes are kept in storage"


def test_images_in_one_folder_of_the_zip_are_found(curator, client_for, media_root):
    images = zipped({"val/red.png": png(64, 48, "red"), "val/blue.png": png(32, 32, "blue")})
    assert upload(client_for(curator), images=images).status_code == 201
    assert Image.objects.count() == 2


def test_uploading_the_same_files_twice_creates_no_duplicates(curator, client_for, media_root):
    client = client_for(curator)
    upload(client)
    second = upload(client)
    assert second.status_code == 201
    assert second.json()["counts"]["images_existing"] == 2
    assert (Image.objects.count(), Region.objects.count()) == (2, 2)


def test_someone_without_the_curator_role_may_not_import(annotator, client_for, media_root):
    response = upload(client_for(annotator))
    assert response.status_code == 403
    assert not Dataset.objects.exists()


def test_an_anonymous_import_is_refused(client, media_root):
    assert upload(client).status_code in (401, 403)
    assert not Dataset.objects.exists()


def test_a_malformed_file_is_a_400_listing_each_bad_record_and_writes_nothing(
    curator, client_for, media_root
):
    data = coco()
    data["annotations"][0]["bbox"] = [4, 6, "wide", 10]
    data["annotations"][1]["image_id"] = 99

    response = upload(client_for(curator), instances=data)

    assert response.status_code == 400
    body = response.json()
    assert "nothing was written" in body["detail"]
    assert [(e["file"], e["record"], e["field"]) for e in body["errors"]] == [
        ("instances_val.json", "annotations[0] (id 10)", "bbox"),
        ("instances_val.json", "annotations[1] (id 11)", "image_id"),
    ]
    assert "/tmp" not in json.dumps(body), "temporary paths are not shown"
    assert not Dataset.objects.exists()
    assert not Region.objects.exists()
    assert not any(media_root.rglob("*.png"))


def test_invalid_json_is_a_400_naming_the_file(curator, client_for, media_root):
    response = upload(client_for(curator), instances=b"{not json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["file"] == "instances_val.json"
    assert not Dataset.objects.exists()


def test_a_missing_image_is_named_by_its_place_in_the_zip(curator, client_for, media_root):
    images = zipped({"red.png": png(64, 48, "red")})
    response = upload(client_for(curator), images=images)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert "blue.png" in error["reason"]
    assert "images.zip/blue.png" in error["reason"]


def test_with_on_error_skip_the_good_records_are_imported(curator, client_for, media_root):
    data = coco()
    data["annotations"][1]["bbox"] = [0, 0, -5, 16]
    response = upload(client_for(curator), instances=data, on_error="skip")
    assert response.status_code == 201
    assert response.json()["counts"]["regions_new"] == 1
    assert response.json()["errors"][0]["field"] == "bbox"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"format": "yolo"}, "format"),
        ({"dataset": "no spaces please"}, "dataset"),
        ({"on_error": "ignore"}, "on_error"),
        ({"format": "vg"}, "regions"),
        ({"format": "llava"}, "file"),
    ],
)
def test_a_bad_form_is_a_400_naming_the_field(curator, client_for, media_root, form, field):
    response = upload(client_for(curator), **form)
    assert response.status_code == 400
    assert field in response.json()
    assert not Dataset.objects.exists()


def test_the_images_zip_is_required(curator, client_for, media_root):
    instances = SimpleUploadedFile("instances.json", json.dumps(coco()).encode())
    response = client_for(curator).post(
        URL, {"dataset": "balls", "format": "coco", "instances": instances}
    )
    assert response.status_code == 400
    assert "images" in response.json()


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"../evil.png": b"x"}, "outside the archive"),
        ({"ok/../../evil.png": b"x"}, "outside the archive"),
        ({"/etc/evil.png": b"x"}, "absolute path"),
        ({"C:\\evil.png": b"x"}, "absolute path"),
    ],
)
def test_a_zip_member_that_would_escape_is_a_400(
    curator, client_for, media_root, tmp_path, members, words
):
    images = zipped({"red.png": png(64, 48, "red"), **members})
    response = upload(client_for(curator), images=images)
    assert response.status_code == 400
    assert words in response.json()["images"][0]
    assert not (tmp_path / "evil.png").exists()
    assert not Dataset.objects.exists()


def test_a_file_that_is_not_a_zip_is_a_400(curator, client_for, media_root):
    response = upload(client_for(curator), images=b"PK but not really a zip")
    assert response.status_code == 400
    assert "not a readable zip" in response.json()["images"][0]


def test_a_zip_that_expands_too_far_is_refused_before_expanding(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_api, "MAX_ARCHIVE_BYTES", 1000)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * 1001)
    with pytest.raises(UnsafeArchive, match="expands to 1001 bytes"):
        extract_zip(archive, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_zip_with_too_many_members_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_api, "MAX_ARCHIVE_MEMBERS", 3)
    archive = io.BytesIO(zipped({f"{n}.png": b"x" for n in range(4)}))
    with pytest.raises(UnsafeArchive, match="4 members"):
        extract_zip(archive, tmp_path)


def test_a_member_that_lies_about_its_size_fails_its_crc_check(tmp_path):
    data = bytearray(zipped({"a.bin": b"A" * 100}))
    # Shrink the declared size in both headers: zipfile stops there, and the CRC then differs.
    for header in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.index(header)
        offset = at + (22 if header == b"PK\x03\x04" else 24)
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    with pytest.raises(UnsafeArchive, match="cannot be read"):
        extract_zip(io.BytesIO(bytes(data)), tmp_path)


def test_a_clean_zip_expands_with_its_folders(tmp_path):
    count = extract_zip(io.BytesIO(zipped({"a/b.png": b"1", "c.png": b"2"})), tmp_path)
    assert count == 2
    assert (tmp_path / "a" / "b.png").read_bytes() == b"1"
