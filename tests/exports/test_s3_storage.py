"""Versions in S3-compatible storage through Django's storage API (django-storages' S3Storage).

The server is moto's ``ThreadedMotoServer`` on loopback: a real HTTP server speaking the S3
protocol, reached by boto3 over TCP exactly as a MinIO or AWS endpoint would be. Image bytes
are stored there by the factories, the export reads them back from there, publishes the version
there, and the download endpoint streams it back out of there.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import boto3
import pytest
from django.core.files.storage import default_storage
from moto.server import ThreadedMotoServer

from tests.catalog.factories import DatasetFactory, QuestionItemFactory, RegionFactory, stored_image
from training.data.version import DatasetVersion as VersionReader
from webapp.exports.download import tar_stream
from webapp.exports.services import cut_version, export_version
from webapp.exports.storage import local_path, version_files
from webapp.regions.models import Region

BUCKET = "fgam-test"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint, settings, tmp_path):
    """A fresh bucket behind ``default_storage``; exports stage files under ``tmp_path``."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    bucket = f"{BUCKET}-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_endpoint,
                "location": "media",
                "addressing_style": "path",
                **CREDENTIALS,
            },
        },
    }
    settings.FGAM_EXPORT_TMP_DIR = str(tmp_path / "export-tmp")
    return client, bucket


@pytest.fixture
def s3_dataset(s3_storage):
    dataset = DatasetFactory(name="harbour")
    for n in range(3):
        image = stored_image(dataset, width=128, height=96, captions=[f"boats {n}"])
        RegionFactory(
            image=image, x0=1.0, y0=2.0, x1=40.5, y1=30.0, phrase=f"boat {n}",
            caption=f"a white boat {n}", status=Region.Status.ACCEPTED,
        )  # fmt: skip
        RegionFactory(image=image, phrase="pending")
        QuestionItemFactory(image=image, question=f"How many boats in {n}?", reference="one")
    return dataset


def keys(client, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.mark.django_db
def test_a_version_is_published_to_s3_and_read_back_whole(s3_dataset, s3_storage, tmp_path):
    client, bucket = s3_storage
    assert local_path is not None and default_storage.__class__.__name__ == "S3Storage"
    version = cut_version(datasets=["harbour"], enqueue=False)
    version = export_version(version_id=version.pk)
    assert version.status == "ready" and version.location == f"versions/{version.name}"
    assert local_path(version) is None  # nothing of it on this machine's disk

    stored = keys(client, bucket, f"media/versions/{version.name}/")
    files = version_files(version)
    assert files[0] == "manifest.json"
    assert sorted(f"media/versions/{version.name}/{f}" for f in files) == stored
    assert f"media/versions/{version.name}/stage1/shard-000000.tar" in stored
    assert sum(1 for k in stored if "/images/" in k) == 3  # embedded: bytes read from S3 too
    assert not list(Path(tmp_path / "export-tmp").glob("*"))  # the staging folder is gone

    # Download through the storage API, then the training reader checks the hash.
    copy = tmp_path / "copy"
    for rel in files:
        target = copy / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(f"{version.location}/{rel}", "rb") as handle:
            target.write_bytes(handle.read())
    reader = VersionReader.open(copy, verify=True)
    assert reader.manifest["content_sha256"] == version.content_sha256
    boxes = sorted(r["box"] for rec in reader.stage1_records() for r in rec.record["regions"])
    assert boxes == [[1.0, 2.0, 40.5, 30.0]] * 3
    assert len(list(reader.stage2("rl_prompts"))) == 3


@pytest.mark.django_db
def test_the_download_tar_streams_out_of_s3(s3_dataset, s3_storage, tmp_path):
    version = export_version(version_id=cut_version(datasets=["harbour"], enqueue=False).pk)
    data = b"".join(tar_stream(version, version_files(version)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "untarred", filter="data")
    reader = VersionReader.open(tmp_path / "untarred" / version.name, verify=True)
    assert reader.manifest["counts"]["stage1_regions"] == 3


@pytest.mark.django_db
def test_reference_mode_points_at_the_objects_in_the_bucket(s3_dataset, s3_storage):
    client, bucket = s3_storage
    version = export_version(
        version_id=cut_version(datasets=["harbour"], reference=True, enqueue=False).pk
    )
    with default_storage.open(f"{version.location}/stage1/shard-000000.tar", "rb") as handle:
        shard = handle.read()
    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        names = tar.getnames()
        assert all(n.endswith(".json") for n in names)  # no image bytes in reference mode
    uris = {
        image.sha256: f"s3://{bucket}/media/{image.storage_path}"
        for image in s3_dataset.images.all()
    }
    import json

    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        for member in tar:
            record = json.loads(tar.extractfile(member).read())
            assert record["uri"] == uris[record["image"]]
            key = record["uri"].removeprefix(f"s3://{bucket}/")
            assert client.get_object(Bucket=bucket, Key=key)["Body"].read()[:4] == b"\x89PNG"


@pytest.mark.django_db
def test_a_retry_after_a_dead_upload_replaces_the_partial_objects(s3_dataset, s3_storage):
    """A worker that died midway left some objects (no manifest); the retry completes it."""
    client, bucket = s3_storage
    version = cut_version(datasets=["harbour"], enqueue=False)
    partial = f"versions/{version.name}/stage1/shard-000000.tar"
    default_storage.save(partial, io.BytesIO(b"half a shard"))
    # and a shard the retry does not write (the data shrank in between)
    default_storage.save(f"versions/{version.name}/stage1/shard-000007.tar", io.BytesIO(b"x"))
    done = export_version(version_id=version.pk)
    with default_storage.open(partial, "rb") as handle:
        assert handle.read() != b"half a shard"
    prefix = f"media/versions/{version.name}/"
    stored = keys(client, bucket, prefix)
    assert [k for k in stored if "/stage1/" in k and k.endswith(".tar")] == [
        f"{prefix}stage1/shard-000000.tar"
    ]
    assert done.status == "ready"
    files = version_files(done)
    assert "stage1/shard-000007.tar" not in files
    data = b"".join(tar_stream(done, files))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert len(tar.getnames()) == len(files) == len(stored)
