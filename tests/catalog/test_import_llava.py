import io

import pytest
from django.core.management import call_command

from tests.catalog.import_helpers import row_counts, write_image, write_json
from webapp.catalog.importing import import_llava
from webapp.catalog.models import Image, QuestionItem
from webapp.core.importing.report import ImportFailed

pytestmark = pytest.mark.django_db


def talk(*turns):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(turns)]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "train2017"
    write_image(folder, "000000033471.jpg", seed=1, fmt="JPEG")
    write_image(folder, "000000052846.jpg", seed=2, fmt="JPEG")
    return folder


@pytest.fixture
def records():
    return [
        {
            "id": "000000033471",
            "image": "000000033471.jpg",
            "conversations": talk(
                "<image>\nWhat are the colors of the bus in the image?",
                "The bus in the image is white and red.",
                "What feature can be seen on the back of the bus?",
                "The back of the bus features an advertisement.",
            ),
        },
        {
            "id": "000000052846",
            "image": "000000052846.jpg",
            "conversations": talk("Where is the cat?\n<image>", "On the sofa."),
        },
        # The same id again, as llava_instruct_150k.json has it for its sub-collections.
        {
            "id": "000000033471",
            "image": "000000033471.jpg",
            "conversations": talk("<image>\nDescribe the image.", "A bus on a street."),
        },
        {"id": "text-1", "conversations": talk("What is 2 + 2?", "4.")},
    ]


def run_llava(tmp_path, images, records, **kwargs):
    path = write_json(tmp_path / "llava_instruct_150k.json", records)
    return import_llava(dataset="llava", file=path, images=images, **kwargs)


def test_each_human_gpt_pair_becomes_a_question_with_its_reference(tmp_path, images, records):
    report = run_llava(tmp_path, images, records)

    assert (report.images_new, report.questions_new, report.errors) == (2, 4, [])
    assert report.notes == {"text-only records skipped": 1}
    bus = Image.objects.get(file_name="000000033471.jpg")
    assert list(bus.questions.order_by("source_key").values_list("source_key", "question")) == [
        ("llava:000000033471#2:0", "Describe the image."),
        ("llava:000000033471:0", "What are the colors of the bus in the image?"),
        ("llava:000000033471:1", "What feature can be seen on the back of the bus?"),
    ]
    cat = QuestionItem.objects.get(source_key="llava:000000052846:0")
    assert (cat.question, cat.reference, cat.source) == (
        "Where is the cat?",
        "On the sofa.",
        "llava",
    )


def test_running_it_again_creates_no_duplicates(tmp_path, images, records):
    run_llava(tmp_path, images, records)
    again = run_llava(tmp_path, images, records)

    assert (again.questions_new, again.questions_existing, again.images_existing) == (0, 4, 2)
    assert QuestionItem.objects.count() == 4


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r[1]["conversations"].pop(),
            "[1] (id 000000052846): conversations: expected human/gpt turns in pairs, got 1",
        ),
        (
            lambda r: r[1]["conversations"].reverse(),
            "[1] (id 000000052846): conversations[0].from: expected 'human', got 'gpt'",
        ),
        (
            lambda r: r[0]["conversations"][3].pop("value"),
            "[0] (id 000000033471): conversations[3].value: missing",
        ),
        (
            lambda r: r[1].update(conversations="hello"),
            "conversations: expected a list, got a string",
        ),
        (lambda r: r[1].pop("id"), "[1]: id: missing"),
        (lambda r: r[1].update(image="missing.jpg"), "[1] (id 000000052846): image: image file"),
        (
            lambda r: r[1]["conversations"][0].update(value="<image>\n"),
            "conversations[0].value: the question is empty",
        ),
    ],
    ids=["odd turns", "wrong order", "missing value", "wrong type", "no id", "no file", "empty"],
)
def test_it_rejects_malformed_records_and_writes_nothing(
    change, expected, tmp_path, images, records
):
    change(records)
    before = row_counts()

    with pytest.raises(ImportFailed) as failed:
        run_llava(tmp_path, images, records)

    messages = [str(error) for error in failed.value.report.errors]
    assert any(expected in m and "llava_instruct_150k.json" in m for m in messages), messages
    assert row_counts() == before


def test_with_skip_a_bad_record_is_left_out(tmp_path, images, records):
    records[1]["conversations"].pop()
    report = run_llava(tmp_path, images, records, on_error="skip")

    assert (report.questions_new, report.skipped_records) == (3, 1)


def test_the_command_prints_the_question_count(tmp_path, images, records):
    out = io.StringIO()
    call_command(
        "import_llava",
        "--dataset=llava",
        f"--file={write_json(tmp_path / 'llava.json', records)}",
        f"--images={images}",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "questions: 4 new, 0 already there" in out.getvalue()
    assert "text-only records skipped: 1" in out.getvalue()
