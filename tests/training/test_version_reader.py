from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from training.data.synthetic import write_version
from training.data.version import (
    DatasetVersion,
    DatasetVersionError,
    Stage1Stream,
    consumer_slice,
    content_sha256,
)


def sha256sum_text(root):
    """What ``cd root && find . -type f ! -name manifest.json | sort | xargs sha256sum`` prints."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    lines = [
        f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n"
        for f in files
        if f != "manifest.json"
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_a_written_version_opens_and_its_hash_is_what_formats_md_defines(small_version):
    version = DatasetVersion.open(small_version)
    assert version.manifest["content_sha256"] == sha256sum_text(small_version)
    assert version.manifest["format"] == "fgam-dataset"
    assert version.count_stage1_images() == 40
    records = list(version.stage1_records())
    assert len({r.key for r in records}) == 40
    assert all(r.image_bytes and r.record["regions"] for r in records)


def test_the_hash_matches_coreutils_sha256sum(small_version):
    listing = subprocess.run(
        "find . -type f ! -path ./manifest.json | sed 's|^\\./||' | LC_ALL=C sort | "
        "xargs sha256sum | sha256sum",
        shell=True,
        cwd=small_version,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert content_sha256(small_version) == listing


def test_a_changed_file_is_refused_naming_the_manifest(small_version):
    (small_version / "stage2" / "sft.jsonl").write_text("{}\n")
    with pytest.raises(DatasetVersionError, match=r"manifest.json: content_sha256"):
        DatasetVersion.open(small_version)
    DatasetVersion.open(small_version, verify=False)


def test_an_unknown_format_version_is_refused(small_version):
    path = small_version / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DatasetVersionError, match="format_version 99"):
        DatasetVersion.open(small_version)


def test_a_broken_shard_is_named(small_version):
    shard = small_version / "stage1" / "shard-000000.tar"
    shard.write_bytes(b"not a tar")
    version = DatasetVersion.open(small_version, verify=False)
    with pytest.raises(DatasetVersionError, match=r"shard-000000\.tar"):
        list(version.stage1_records())


def test_stage2_and_eval_files_are_read(small_version):
    version = DatasetVersion.open(small_version)
    sft = list(version.stage2("sft"))
    assert sft and {"question", "response", "feedback", "target"} <= sft[0].keys()
    assert len(list(version.stage2("rm"))) == len(sft)
    assert list(version.eval_items())
    assert version.llava_conversations()[0]["conversations"]


def test_reference_mode_records_carry_a_uri_and_load(tmp_path):
    from training.data.version import load_image_bytes

    root = write_version(tmp_path / "ref", images=6, shard_size=4, reference=True)
    version = DatasetVersion.open(root)
    assert version.reference_mode
    records = list(version.stage1_records())
    assert all(r.image_bytes is None and r.uri for r in records)
    data = load_image_bytes(version, records[0])
    assert hashlib.sha256(data).hexdigest() == records[0].record["image"]


@pytest.mark.parametrize(("shards", "consumers"), [(4, 2), (3, 3), (2, 5), (1, 4), (3, 8)])
def test_consumers_split_every_sample_exactly_once(shards, consumers):
    seen = []
    for c in range(consumers):
        ids, stride, offset = consumer_slice(shards, c, consumers)
        seen += [(s, n) for s in ids for n in range(10) if n % stride == offset]
    assert sorted(seen) == [(s, n) for s in range(shards) for n in range(10)]


@pytest.mark.parametrize(("ranks", "workers"), [(2, 1), (2, 2), (3, 2)])
def test_ranks_and_workers_read_disjoint_samples_covering_the_version(
    small_version, ranks, workers
):
    version = DatasetVersion.open(small_version)  # 3 shards
    keys = []
    for rank in range(ranks):
        stream = Stage1Stream(version, 4, list, rank=rank, world_size=ranks, shuffle_buffer=8)
        for worker in range(workers):
            keys += [r.key for r in stream.records(worker, workers, pass_index=0)]
    assert sorted(keys) == sorted(r.key for r in version.stage1_records())


def test_the_holdout_never_reaches_training(small_version):
    version = DatasetVersion.open(small_version)
    train = Stage1Stream(version, 4, list, holdout_fraction=0.3)
    held = Stage1Stream(version, 4, list, holdout_fraction=0.3, holdout=True)
    a = {r.key for r in train.records(0, 1, 0)}
    b = {r.key for r in held.records(0, 1, 0)}
    assert a and b and not a & b and len(a | b) == 40


def test_resuming_the_stream_skips_exactly_the_batches_already_used(small_version):
    version = DatasetVersion.open(small_version)
    keys = lambda batch: [r.key for r in batch]  # noqa: E731
    stream = Stage1Stream(version, 4, keys, seed=3)
    it = iter(stream)
    first = [next(it) for _ in range(15)]  # crosses a pass (10 batches per pass)
    resumed = iter(Stage1Stream(version, 4, keys, seed=3, skip_batches=7))
    assert [next(resumed) for _ in range(8)] == first[7:]


def test_the_fast_stage1_serialisation_is_byte_for_byte_canonical_json():
    """The exporter's hot path must write exactly what ``canonical_json`` writes: the content
    hash of a version may not depend on which path serialised it."""
    import random

    from training.data.writer import canonical_json, region_from_row, stage1_json

    rng = random.Random(7)
    texts = ["", "plain", 'quo"te', "back\\slash", "new\nline\ttab", "ünï©ødé ✓", "\x01ctl",
             "emoji 🐱", "</script>"]  # fmt: skip
    for _ in range(300):
        rows = []
        for _ in range(rng.randrange(0, 6)):
            x0 = rng.choice([0.0, 1.5, rng.random() * 100, 3.0000000000000004, 1e-7])
            y0 = rng.random() * 50
            rows.append(
                (
                    rng.randrange(1, 10**12), x0, y0, x0 + 1 + rng.random() * 10, y0 + 2.25,
                    rng.choice(texts), rng.choice(texts), rng.choice(["gt", "detector", "human"]),
                    rng.choice([None, 0.0, 1.0, rng.random(), 0.8712345678]),
                )
            )  # fmt: skip
        head = {"image": "ab" * 32, "width": rng.randrange(1, 5000), "height": 480,
                "caption": rng.choice(texts)}  # fmt: skip
        if rng.random() < 0.5:
            head["uri"] = "file:///tmp/a%20b.png"
        expected = canonical_json({**head, "regions": [region_from_row(r) for r in rows]})
        assert stage1_json(head, rows) == expected


def test_the_index_is_the_same_from_records_and_from_rows(tmp_path):
    import pyarrow.parquet as pq

    from training.data.writer import IndexWriter, region_from_row

    rows = [(n, 1.0 * n, 2.0, 3.0 + n, 4.0, f"p{n}", f"c{n}", "gt", None if n % 2 else 0.5)
            for n in range(7)]  # fmt: skip
    by_rows, by_records = (
        IndexWriter(tmp_path / "a.parquet", row_group=4),
        IndexWriter(tmp_path / "b.parquet", row_group=4),
    )
    for key, part in (("k1", rows[:3]), ("k2", rows[3:5]), ("k3", rows[5:])):
        by_rows.add_rows(key, key.upper(), part)
        by_records.add_many(key, key.upper(), [region_from_row(r) for r in part])
    by_rows.close()
    by_records.close()
    a, b = (tmp_path / "a.parquet").read_bytes(), (tmp_path / "b.parquet").read_bytes()
    assert a == b
    table = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert [(r["key"], r["image"], r["region"]) for r in table] == [
        ("k1", "K1", 0), ("k1", "K1", 1), ("k1", "K1", 2), ("k2", "K2", 3), ("k2", "K2", 4),
        ("k3", "K3", 5), ("k3", "K3", 6),
    ]  # fmt: skip
    assert table[1]["box"] == [1.0, 2.0, 4.0, 4.0] and table[1]["score"] is None


def test_stage2_rows_find_their_image_in_either_mode(tmp_path):
    from training.data.version import record_image_bytes

    version = DatasetVersion(root=tmp_path, manifest={})
    image = tmp_path / "images" / "ab" / ("ab" * 32 + ".png")
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG embedded")
    assert record_image_bytes(version, {"image": "ab" * 32}) == b"\x89PNG embedded"
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"\x89PNG referenced")
    assert version.image_bytes({"image": "cd", "uri": outside.as_uri()}) == b"\x89PNG referenced"
    with pytest.raises(DatasetVersionError, match="not a readable local file"):
        version.image_bytes({"id": 3, "image": "cd", "uri": "s3://bucket/key.png"})
    with pytest.raises(DatasetVersionError, match="row 4 has no image"):
        version.image_bytes({"id": 4, "image": "cd"})
