"""Setting a round up: items (sampled from a version, or imported), systems and responses,
warnings about responses that name a model, opening and closing, through the curator's pages."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.catalog.factories import DatasetFactory, ImageFactory
from tests.evaluation.conftest import make_round
from webapp.evaluation import services
from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Assignment, EvalItem, Round, System


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(rows, name="file.jsonl"):
    return SimpleUploadedFile(name, rows if isinstance(rows, bytes) else jsonl(rows))


@pytest.fixture
def images(db):
    dataset = DatasetFactory()
    return [ImageFactory(dataset=dataset, source="coco" if n < 6 else "vg") for n in range(10)]


def test_a_curator_sets_up_and_opens_a_round_from_the_pages(curator, client_as, images):
    client = client_as(curator)
    created = client.post(reverse("evaluation:round_new"), {"name": "Table 5 again", "seed": "3"})
    round_ = Round.objects.get(name="Table 5 again")
    assert created["Location"] == reverse("evaluation:round_detail", args=[round_.pk])
    items = [
        {"id": f"q{n}", "image": im.sha256, "question": f"What is at {n}?"}
        for n, im in enumerate(images)
    ]
    client.post(reverse("evaluation:items_import", args=[round_.pk]), {"file": upload(items)})
    assert round_.items.count() == 10
    for name in ("baseline model", "fgam model"):
        responses = [{"id": f"q{n}", "response": f"{name} answer {n}"} for n in range(10)]
        client.post(
            reverse("evaluation:system_add", args=[round_.pk]),
            {"name": name, "file": upload(responses)},
        )
    page = client.get(reverse("evaluation:round_detail", args=[round_.pk])).content.decode()
    # "fgam" names a model: the curator is warned, and opening needs an acknowledgement.
    assert 'data-testid="leaks"' in page and "fgam model answer 0" in page
    refused = client.post(reverse("evaluation:round_open", args=[round_.pk]), follow=True)
    assert "name a system or a model" in refused.content.decode()
    round_.refresh_from_db()
    assert round_.status == "draft"
    client.post(reverse("evaluation:round_open", args=[round_.pk]), {"acknowledge_leaks": "on"})
    round_.refresh_from_db()
    assert round_.status == "open"
    assert Assignment.objects.filter(round=round_).count() == 30


def test_a_bad_responses_file_names_the_line_and_changes_nothing(curator, client_as, images):
    round_ = services.create_round(name="r")
    services.import_items(
        round_=round_,
        lines=jsonl([{"id": "a", "image": images[0].sha256, "question": "Q?"}]).splitlines(),
    )
    client = client_as(curator)
    bad = [{"id": "a", "response": "fine"}, {"id": "zzz", "response": "no such item"}]
    answer = client.post(
        reverse("evaluation:system_add", args=[round_.pk]),
        {"name": "S1", "file": upload(bad, "s1.jsonl")}, follow=True,
    )  # fmt: skip
    assert "s1.jsonl line 2: id &#x27;zzz&#x27; is not an item" in answer.content.decode()
    assert not System.objects.filter(round=round_).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "image": "x", "question": "Q"}\n', 'line 1: "image" must be a sha256'),
        (b'{"id": "a"\n', "line 1: not JSON"),
        (b"\n[1]\n", "line 2: expected a JSON object"),
        (b'{"id": "a", "image_id": 1}\n', "line 1: missing 'question'"),
    ],
)
def test_bad_item_files_name_the_line(db, content, message):
    round_ = services.create_round(name="r")
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        services.import_items(round_=round_, lines=content.splitlines(), name="items.jsonl")


def test_an_unknown_image_is_named(db):
    round_ = services.create_round(name="r")
    lines = jsonl([{"id": 1, "image": "ab" * 32, "question": "Q?"}]).splitlines()
    with pytest.raises(
        InputError, match=r"items.jsonl line 1: image '(ab)+' is not in the catalog"
    ):
        services.import_items(round_=round_, lines=lines, name="items.jsonl")


def test_a_seeded_stratified_sample_keeps_the_sources_shares(db, images):
    round_ = services.create_round(name="r", seed=5)
    rows = [{"id": f"q{n}", "image": im.sha256, "question": "Q?"} for n, im in enumerate(images)]
    services.import_items(round_=round_, lines=jsonl(rows).splitlines(), n=5, stratify=True)
    first = list(round_.items.values_list("key", "stratum"))
    assert sorted(s for _, s in first) == ["coco", "coco", "coco", "vg", "vg"]
    services.import_items(
        round_=round_, lines=jsonl(list(reversed(rows))).splitlines(), n=5, stratify=True
    )
    assert list(round_.items.values_list("key", "stratum")) == first  # same seed, same sample


def test_items_are_sampled_from_a_versions_eval_items(db, images, tmp_path):
    from webapp.exports.models import DatasetVersion

    root = tmp_path / "v1"
    (root / "eval").mkdir(parents=True)
    (root / "manifest.json").write_text(
        json.dumps({"format": "fgam-dataset", "format_version": 1, "id": "v1"})
    )
    rows = [
        {"id": n, "image": im.sha256, "question": f"Q{n}?", "reference": None}
        for n, im in enumerate(images)
    ]
    (root / "eval" / "items.jsonl").write_bytes(jsonl(rows))
    version = DatasetVersion.objects.create(
        name="v1", status="ready", storage="path", location=str(root)
    )
    round_ = services.create_round(name="r", seed=1)
    assert services.sample_from_version(round_=round_, version=version, n=4, stratify=True) == 4
    assert round_.items.count() == 4
    assert round_.sampling["available"] == 10 and round_.version == version
    assert set(round_.items.values_list("stratum", flat=True)) == {"coco", "vg"}


def test_leak_warnings_find_system_names_keys_and_model_words(db):
    round_ = make_round(items=2, open_it=False)
    alpha = round_.systems.get(name="ZEBRA-SYSTEM-ALPHA")
    item = round_.items.first()
    item.responses.filter(system=alpha).update(text="As ZEBRA-SYSTEM-ALPHA I think it is left.")
    item.responses.exclude(system=alpha).filter(system__name__startswith="QUOKKA").update(
        text="I am LLaVA-1.5 and the car is left."
    )
    leaks = services.leak_warnings(round_)
    assert {(leak.system, leak.word.lower()) for leak in leaks} == {
        ("ZEBRA-SYSTEM-ALPHA", "zebra-system-alpha"), ("QUOKKA-SYSTEM-BETA", "llava"),
    }  # fmt: skip


def test_a_round_with_missing_responses_cannot_open_until_they_are_dropped(db):
    round_ = make_round(items=3, open_it=False)
    EvalItem.objects.filter(round=round_, key="item-1").first().responses.first().delete()
    with pytest.raises(InputError, match="responses for 2 of 3 items"):
        services.open_round(round_=round_)
    assert services.drop_incomplete_items(round_=round_) == 1
    services.open_round(round_=round_)
    assert Assignment.objects.filter(round=round_).count() == 2 * 3


def test_an_open_round_no_longer_changes_its_items_or_systems(round_):
    with pytest.raises(InputError, match="only a draft can change"):
        services.add_system(round_=round_, name="late")


def test_a_curator_can_give_other_criteria_and_bad_json_is_named(curator, client_as):
    client = client_as(curator)
    bad = client.post(reverse("evaluation:round_new"), {"name": "x", "criteria": "{oops"})
    assert bad.status_code == 422 and "criteria: not JSON" in bad.content.decode()
    anchors = {str(p): f"point {p}" for p in range(1, 6)}
    missing = {"likert": [{"key": "clarity", "label": "Clarity", "anchors": {"1": "bad"}}]}
    refused = client.post(
        reverse("evaluation:round_new"), {"name": "x", "criteria": json.dumps(missing)}
    )
    assert "criteria.likert[0].anchors: no text for 2, 3, 4, 5" in refused.content.decode()
    criteria = {
        "likert": [{"key": "clarity", "label": "Clarity", "anchors": anchors}],
        "hallucination": {"label": "Made up", "help": ""},
        "error_types": [{"key": "object", "label": "Object", "shortcut": "o"}],
    }
    client.post(
        reverse("evaluation:round_new"), {"name": "custom", "criteria": json.dumps(criteria)}
    )
    assert Round.objects.get(name="custom").likert_keys == ["clarity"]
    form = client.get(reverse("evaluation:round_new")).content.decode()
    assert "Fine-grained localization accuracy" in form  # the defaults, ready to edit
