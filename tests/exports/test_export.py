"""Cutting versions: round trip through the training reader, determinism, atomicity, errors."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from tests.catalog.factories import DatasetFactory, RegionFactory
from training.data.version import DatasetVersion as VersionReader
from training.data.version import Stage1Stream, key_in_holdout, load_image_bytes
from webapp.exports import services, writing
from webapp.exports.models import DatasetVersion
from webapp.exports.selection import ExportError
from webapp.exports.services import cut_version, export_version
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db


def cut(out: Path, *args: str) -> Path:
    stdout = io.StringIO()
    call_command("export_version", *args, "--out", str(out), stdout=stdout, stderr=io.StringIO())
    return Path(stdout.getvalue().strip())


def expected_regions(dataset, **extra) -> dict[int, Region]:
    rows = Region.objects.filter(image__dataset=dataset, status="accepted", flagged=False, **extra)
    return {r.pk: r for r in rows}


def test_the_reader_gets_exactly_the_accepted_regions_unchanged(reviewed, tmp_path):
    path = cut(tmp_path / "out", "--dataset", "street")

    version = VersionReader.open(path, verify=True)
    assert not version.reference_mode
    records = list(version.stage1_records())
    expected = expected_regions(reviewed)
    got = {r["id"]: (rec, r) for rec in records for r in rec.record["regions"]}
    assert set(got) == set(expected)
    for rid, (rec, region) in got.items():
        db = expected[rid]
        assert region["box"] == [db.x0, db.y0, db.x1, db.y1]
        assert (region["caption"], region["phrase"], region["origin"], region["score"]) == (
            db.caption, db.phrase, db.origin, db.score,
        )  # fmt: skip
        assert rec.key == rec.record["image"] == db.image.sha256
        assert rec.record["caption"] == db.image.captions[0]
        assert (rec.record["width"], rec.record["height"]) == (128, 96)
        assert (
            load_image_bytes(version, rec)
            == Path(
                reviewed.images.get(sha256=rec.key).storage_path and _media(db.image.storage_path)
            ).read_bytes()
        )
    assert version.manifest["counts"]["stage1_regions"] == len(expected) == 16
    assert version.manifest["sources"] == [{"id": reviewed.pk, "name": "street"}]
    index = pq.read_table(path / "stage1" / "index.parquet").to_pylist()
    assert sorted(row["region"] for row in index) == sorted(expected)
    prompts = list(version.stage2("rl_prompts"))
    assert len(prompts) == 8
    assert {p["reference"] for p in prompts if "0?" in p["question"]} == {None}
    assert list(version.stage2("sft")) == list(version.stage2("rm")) == []
    assert version.llava_conversations() == []
    assert list(version.eval_items()) == []


def test_a_record_carries_the_first_caption_or_an_empty_one(media_root, tmp_path):
    from tests.catalog.factories import stored_image

    dataset = DatasetFactory(name="captions")
    for captions in ([], ['first \u00e9 "quoted"', "second"]):
        image = stored_image(dataset, width=128, height=96, captions=captions)
        RegionFactory(image=image, status=Region.Status.ACCEPTED)
    version = VersionReader.open(cut(tmp_path / "out", "--dataset", "captions"), verify=True)
    assert sorted(rec.record["caption"] for rec in version.stage1_records()) == [
        "",
        'first \u00e9 "quoted"',
    ]


def _media(rel: str) -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / rel


def test_status_any_and_filters_choose_the_regions(reviewed, tmp_path):
    every = VersionReader.open(cut(tmp_path / "a", "--dataset", "street", "--status", "any"))
    assert every.manifest["counts"]["stage1_regions"] == 8 * 4  # flagged still excluded
    detector = VersionReader.open(
        cut(tmp_path / "b", "--dataset", "street", "--origin", "detector", "--min-score", "0.5")
    )
    regions = [r for rec in detector.stage1_records() for r in rec.record["regions"]]
    assert {r["origin"] for r in regions} == {"detector"} and len(regions) == 8


def test_the_same_cut_twice_has_the_same_content_hash(reviewed, tmp_path):
    first = VersionReader.open(cut(tmp_path / "one", "--dataset", "street", "--reference"))
    second = VersionReader.open(cut(tmp_path / "two", "--dataset", "street", "--reference"))
    assert first.id != second.id
    assert first.manifest["content_sha256"] == second.manifest["content_sha256"]
    # and the hash follows the data: one more accepted region changes it
    RegionFactory(image=reviewed.images.first(), status="accepted", phrase="new")
    third = VersionReader.open(cut(tmp_path / "three", "--dataset", "street", "--reference"))
    assert third.manifest["content_sha256"] != first.manifest["content_sha256"]
    assert third.manifest["derived_from"] == [second.id]


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_fetch_chunks_splitting_an_image_give_the_same_bytes(
    reviewed, tmp_path, settings, chunk_size
):
    # An image's two accepted regions straddle fetch chunks of 1 or 3 rows.
    whole = VersionReader.open(cut(tmp_path / "whole", "--dataset", "street"))
    settings.FGAM_EXPORT_CHUNK_SIZE = chunk_size
    split = VersionReader.open(cut(tmp_path / "split", "--dataset", "street"))
    assert split.manifest["content_sha256"] == whole.manifest["content_sha256"]
    assert split.manifest["counts"]["stage1_regions"] == 16


def test_reference_mode_carries_a_uri_the_reader_can_load(reviewed, tmp_path):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street", "--reference"))
    assert version.reference_mode
    assert not (version.root / "images").exists()
    rec = next(version.stage1_records())
    assert rec.image_bytes is None and rec.uri.startswith("file://")
    assert load_image_bytes(version, rec).startswith(b"\x89PNG")


def test_the_evaluation_split_is_by_image_and_disjoint(reviewed, tmp_path):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street", "--holdout", "0.5"))
    train_images = {rec.key for rec in version.stage1_records()}
    prompt_images = {row["image"] for row in version.stage2("rl_prompts")}
    eval_images = {row["image"] for row in version.eval_items()}
    assert eval_images and train_images
    assert not (eval_images & (train_images | prompt_images))
    every = set(reviewed.images.values_list("sha256", flat=True))
    assert eval_images == {sha for sha in every if key_in_holdout(sha, 0.5)}
    assert version.manifest["counts"]["heldout_images"] == len(eval_images)


def test_stage1_streams_from_the_export_without_duplicates(reviewed, tmp_path):
    version = VersionReader.open(cut(tmp_path, "--dataset", "street", "--reference"))
    seen = []
    for rank in range(2):
        stream = Stage1Stream(
            version, batch_size=1, make_batch=lambda b: b[0].key, rank=rank, world_size=2,
            shuffle_buffer=1, endless=False,
        )  # fmt: skip
        seen += list(stream)
    assert sorted(seen) == sorted(reviewed.images.values_list("sha256", flat=True))


def test_an_image_in_two_datasets_is_one_sample(reviewed, tmp_path):
    other = DatasetFactory(name="copy")
    image = reviewed.images.first()
    twin = type(image).objects.create(
        dataset=other, sha256=image.sha256, width=128, height=96, storage_path=image.storage_path
    )
    RegionFactory(image=twin, status="accepted", phrase="twin")
    version = VersionReader.open(
        cut(tmp_path, "--dataset", "street", "--dataset", "copy", "--reference")
    )
    records = [r for r in version.stage1_records() if r.key == image.sha256]
    assert len(records) == 1
    assert "twin" in {r["phrase"] for r in records[0].record["regions"]}


def test_a_killed_export_leaves_nothing_visible_and_a_retry_completes(
    reviewed, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    version = cut_version(datasets=["street"], out_dir=out, enqueue=False)
    calls = {"n": 0}
    real_read = writing.ImageSource.read

    def dies_midway(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise SystemExit("killed")  # like a SIGTERM'd worker: no cleanup of ours runs
        return real_read(self, *args)

    monkeypatch.setattr(writing.ImageSource, "read", dies_midway)
    monkeypatch.setattr(services.shutil, "rmtree", lambda *a, **k: None)  # as under SIGKILL
    with pytest.raises(SystemExit):
        export_version(version_id=version.pk)
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert visible == []
    assert [p.name.startswith(f".tmp-{version.name}-") for p in out.iterdir()] == [True]
    version.refresh_from_db()
    assert version.status == "running" and not version.content_sha256
    assert not DatasetVersion.objects.filter(status="ready").exists()

    monkeypatch.undo()
    done = export_version(version_id=version.pk)
    assert done.status == "ready" and done.attempts == 2
    assert [p.name for p in out.iterdir()] == [version.name]
    assert VersionReader.open(out / version.name).manifest["counts"]["stage1_images"] == 8
    assert export_version(version_id=version.pk) is None  # a redelivered task does nothing


def test_a_failed_export_is_marked_failed_with_its_reason(reviewed, tmp_path):
    out = tmp_path / "out"
    image = reviewed.images.first()
    type(image).objects.filter(pk=image.pk).update(storage_path="")
    version = cut_version(datasets=["street"], out_dir=out, enqueue=False)
    with pytest.raises(ExportError, match="reference mode"):
        export_version(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and image.sha256 in version.error
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "no dataset named 'nope'"),
        (["--dataset", "street", "--origin", "robot"], "origins"),
        (["--dataset", "street", "--min-score", "3"], "min_score"),
        (["--dataset", "street", "--holdout", "1.5"], "holdout_fraction"),
    ],
)
def test_bad_filters_are_clear_errors(reviewed, tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        cut(tmp_path, *args)
    assert not DatasetVersion.objects.exists()


def test_an_empty_selection_is_a_clear_error(media_root, tmp_path):
    RegionFactory(image__dataset=DatasetFactory(name="raw"))  # pending only
    with pytest.raises(CommandError, match="empty selection: no region of raw passes"):
        cut(tmp_path, "--dataset", "raw")
    with pytest.raises(ExportError, match="unknown filter colour"):
        cut_version(datasets=["raw"], filters={"colour": "red"})


@pytest.mark.django_db(transaction=True)
def test_the_celery_task_publishes_into_storage_in_one_snapshot(reviewed, media_root):
    """Through the task and Django's storage, in a transaction of its own (REPEATABLE READ on
    PostgreSQL); the version is only listed once it is complete."""
    version = cut_version(datasets=["street"], filters={"holdout_fraction": 0.25})
    version.refresh_from_db()
    assert version.status == "ready" and version.location == f"versions/{version.name}"
    root = media_root / "versions" / version.name
    reader = VersionReader.open(root)
    assert reader.manifest["content_sha256"] == version.content_sha256
    assert version.size_bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert [p.name for p in (media_root / "versions").iterdir()] == [version.name]
