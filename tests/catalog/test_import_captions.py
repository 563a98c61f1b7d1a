import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from tests.catalog.import_helpers import row_counts, write_image
from webapp.catalog.importing import import_captions
from webapp.catalog.models import Image
from webapp.core.importing.report import ImportFailed

pytestmark = pytest.mark.django_db

PAIRS = [
    ("a/one.png", "A red square."),
    ("two.png", "A blue square."),
    ("a/one.png", "  A square, red.\n"),
    ("a/one.png", "A red square."),
]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    write_image(folder, "a/one.png", seed=1)
    write_image(folder, "two.png", seed=2)
    return folder


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def write_csv(path, rows, header=("path", "caption")):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    table = pa.table({"image": [r[0] for r in rows], "TEXT": [r[1] for r in rows]})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_jsonl(p / "pairs.jsonl", [{"image": i, "caption": c} for i, c in PAIRS]),
        lambda p: write_csv(p / "pairs.csv", PAIRS),
        lambda p: write_parquet(p / "pairs.parquet", PAIRS),
    ],
    ids=["jsonl", "csv", "parquet"],
)
def test_it_imports_pairs_and_collects_the_captions_of_each_image(write, tmp_path, images):
    report = import_captions(dataset="pairs", file=write(tmp_path), images=images)

    assert (report.images_new, report.regions_new, report.errors) == (2, 0, [])
    one = Image.objects.get(file_name="a/one.png")
    assert one.captions == ["A red square.", "A square, red."]
    assert (one.source, one.width) == ("captions", 64)
    assert Image.objects.get(file_name="two.png").captions == ["A blue square."]


def test_running_it_again_creates_nothing_and_new_captions_are_added(tmp_path, images):
    import_captions(dataset="pairs", file=write_csv(tmp_path / "p.csv", PAIRS), images=images)
    more = write_csv(tmp_path / "more.csv", [*PAIRS, ("two.png", "Blue.")])

    report = import_captions(dataset="pairs", file=more, images=images)

    assert (report.images_new, report.images_existing) == (0, 2)
    assert Image.objects.count() == 2
    assert Image.objects.get(file_name="two.png").captions == ["A blue square.", "Blue."]


def test_urls_are_refused_with_a_clear_error_for_the_row(tmp_path, images):
    rows = [{"url": "https://example.org/cat.jpg", "TEXT": "A cat."}]
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        import_captions(dataset="p", file=write_jsonl(tmp_path / "l.jsonl", rows), images=images)

    (error,) = failed.value.report.errors
    assert (error.record, error.field) == ("line 1", "url")
    assert "URLs are not downloaded" in error.reason and "img2dataset" in error.reason
    assert row_counts() == before


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "p.jsonl",
            b'{"image": "two.png", "caption": "x"}\n{"image": 3,',
            "line 2: (line): invalid JSON",
        ),
        ("p.jsonl", b'{"image": "two.png"}\n', "line 1: caption: missing"),
        ("p.jsonl", b'{"image": "two.png", "text": 5}\n', "line 1: text: expected a string"),
        ("p.jsonl", b'{"file": "../../etc/passwd", "text": "x"}\n', "line 1: file: '../../etc"),
        (
            "p.csv",
            b"path,caption\ntwo.png,caf\xe9\n",
            "not UTF-8 text: byte 0xe9 at byte offset 24",
        ),
        ("p.csv", b"name,caption\ntwo.png,x\n", "p.csv: no image column; expected one of image"),
        ("p.csv", b"path,caption\nnothere.png,x\n", "line 2: path: image file not found"),
        ("p.parquet", b"PAR1 not really", "p.parquet: not a readable Parquet file"),
        ("p.txt", b"two.png\tx\n", "p.txt: unknown file type '.txt'"),
    ],
    ids=[
        "invalid json",
        "missing caption",
        "wrong type",
        "escaping path",
        "not utf-8",
        "no image column",
        "missing file",
        "bad parquet",
        "unknown type",
    ],
)
def test_it_rejects_malformed_files_and_writes_nothing(name, content, expected, tmp_path, images):
    (tmp_path / name).write_bytes(content)
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        import_captions(dataset="pairs", file=tmp_path / name, images=images)

    messages = [str(error) for error in failed.value.report.errors]
    assert any(expected in message and name in message for message in messages), messages
    assert row_counts() == before


def test_the_command_imports_a_parquet_file(tmp_path, images):
    out = io.StringIO()
    call_command(
        "import_captions",
        "--dataset=laion-sample",
        f"--file={write_parquet(tmp_path / 'pairs.parquet', PAIRS)}",
        f"--images={images}",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "images:    2 new" in out.getvalue()
