"""The builder over the tiny datasets of ``conftest``: counts, balance, hand-computed POPE
negatives, determinism, reviewed images as the only source of "no", spatial probes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from training.geometry import spatial_relation
from training.probes.layout import ProbeSet as ProbeFolder
from webapp.probes.building import ProbeBuildError, build_probe_set, start_probe_set
from webapp.probes.models import ProbeSet
from webapp.probes.sampling import SamplingError

pytestmark = pytest.mark.django_db

NAMES = {
    "I1": {"dog", "cat", "sofa"},
    "I2": {"dog", "cat", "tv"},
    "I3": {"dog", "ball", "grass"},
    "I4": {"car", "road", "tree"},
    "I5": {"car", "road", "person"},
}
# Hand-computed over I1..I5 (see conftest): frequency order dog(3), car, cat, road (2), ball,
# grass, person, sofa, tree, tv (1). Adversarial: per positive, alphabetically, its most
# co-occurring absent name, else the popular order.
POPULAR = {
    "I1": ["car", "road", "ball"],
    "I2": ["car", "road", "ball"],
    "I3": ["car", "cat", "road"],
    "I4": ["dog", "cat", "ball"],
    "I5": ["dog", "cat", "ball"],
}
ADVERSARIAL = {
    "I1": ["tv", "ball", "car"],  # cat -> tv, dog -> ball, sofa -> (popular) car
    "I2": ["sofa", "ball", "car"],  # cat -> sofa, dog -> ball, tv -> car
    "I3": ["car", "cat", "road"],  # ball -> car, dog -> cat, grass -> road
    "I4": ["person", "dog", "cat"],  # car -> person, road -> dog, tree -> cat
    "I5": ["tree", "dog", "cat"],  # car -> tree, person -> dog, road -> cat
}


def build(datasets, kind="pope", **kw) -> ProbeSet:
    """The production path: with the lmms-eval task folder."""
    probe_set = start_probe_set(datasets=datasets, kind=kind, enqueue=False, **kw)
    return build_probe_set(probe_set_id=probe_set.pk)


def by_image(zoo, probe_set):
    label_of = {image.sha256: label for label, image in zoo["images"].items()}
    folder = ProbeFolder.open(probe_set.path, verify=True)
    rows = defaultdict(lambda: {"yes": [], "no": []})
    for probe in folder.probes():
        rows[label_of[probe.image]][probe.answer].append(probe)
    return folder, rows


@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_pope_counts_balance_presence(zoo, split):
    probe_set = build(["zoo"], split=split, images=5, seed=7)
    assert probe_set.status == ProbeSet.Status.READY and probe_set.split == split
    folder, rows = by_image(zoo, probe_set)
    assert set(rows) == set(NAMES)  # R6 (two names) and U1 (not reviewed) never
    assert probe_set.counts["probes"] == 30 and probe_set.counts["yes"] == 15
    assert probe_set.counts["by_split"] == {split: {"yes": 15, "no": 15}}
    vocabulary = set().union(*NAMES.values(), {"apple", "bird"})
    for label, answers in rows.items():
        yes = [p.object for p in answers["yes"]]
        no = [p.object for p in answers["no"]]
        assert sorted(yes) == sorted(NAMES[label])  # present
        assert len(set(no)) == 3 and not set(no) & NAMES[label]  # absent, distinct
        assert set(no) <= vocabulary  # "unicorn" (pending) and "zebra" (rejected) never
        for p in answers["yes"]:
            assert p.boxes and len(p.boxes) == 1 and p.kind == "pope"
        for p in answers["no"]:
            assert p.boxes is None
    first = next(iter(folder.probes()))
    assert first.question.startswith("Is there a") and first.question.endswith("in the image?")
    assert [p.id for p in folder.probes()] == [str(n) for n in range(30)]
    assert folder.manifest["seed"] == 7 and folder.manifest["allow_seen"] is False
    assert folder.manifest["image_sha256s"] == sorted(
        zoo["images"][label].sha256 for label in NAMES
    )
    assert sorted(probe_set.image_rows.values_list("sha256", flat=True)) == sorted(
        folder.manifest["image_sha256s"]
    )


@pytest.mark.parametrize(
    ("split", "expected"), [("popular", POPULAR), ("adversarial", ADVERSARIAL)]
)
def test_popular_and_adversarial_negatives_are_the_hand_computed_ones(zoo, split, expected):
    probe_set = build(["zoo"], split=split, images=5, seed=11)
    _, rows = by_image(zoo, probe_set)
    assert {label: [p.object for p in a["no"]] for label, a in rows.items()} == expected
    if split == "adversarial":
        assert probe_set.counts["fallback_negatives"] == 8


def test_article_in_questions(zoo):
    _, rows = by_image(zoo, build(["zoo"], split="popular", images=5))
    questions = {p.object: p.question for a in rows.values() for p in a["yes"] + a["no"]}
    assert questions["ball"] == "Is there a ball in the image?"
    assert questions["tv"] == "Is there a tv in the image?"


def test_same_seed_same_bytes(zoo, tmp_path):
    one = build(["zoo"], split="adversarial", images=4, seed=3)
    two = build(["zoo"], split="adversarial", images=4, seed=3, out_dir=tmp_path / "elsewhere")
    assert (Path(one.path) / "lmms_eval" / "task.yaml").is_file()
    other = build(["zoo"], split="adversarial", images=4, seed=4)
    assert one.set_id != two.set_id
    assert one.content_sha256 == two.content_sha256
    assert (Path(one.path) / "probes.jsonl").read_bytes() == (
        Path(two.path) / "probes.jsonl"
    ).read_bytes()
    assert Path(two.path).parent == tmp_path / "elsewhere"
    assert other.content_sha256 != one.content_sha256


def test_only_reviewed_images_supply_negatives(zoo):
    """Unmark I1..I3: only I4, I5 remain candidates; marking U1 makes it one (it has 4 names)."""
    from django.utils import timezone

    images = zoo["images"]
    for label in ("I1", "I2", "I3"):
        images[label].exhaustively_reviewed_at = None
        images[label].save()
    with pytest.raises(SamplingError, match="only 2 exhaustively reviewed"):
        build(["zoo"], images=3)
    assert ProbeSet.objects.latest("id").status == ProbeSet.Status.FAILED
    images["U1"].exhaustively_reviewed_at = timezone.now()
    images["U1"].save()
    _, rows = by_image(zoo, build(["zoo"], images=3))
    assert set(rows) == {"I4", "I5", "U1"}


def test_spatial_balanced_overlaps_and_same_names_skipped(yard):
    probe_set = build(["yard"], kind="spatial", images=1, per_image=4, seed=5)
    folder = ProbeFolder.open(probe_set.path, verify=True)
    probes = list(folder.probes())
    assert len(probes) == 4 and sum(p.answer == "yes" for p in probes) == 2
    for p in probes:
        assert p.kind == "spatial" and p.split == "spatial" and p.image == yard["image"].sha256
        assert {p.subject, p.object} <= {"dog", "cat", "ball", "rug"}  # "car" twice: never
        assert {p.subject, p.object} != {"dog", "rug"}  # they overlap
        holds = spatial_relation(*p.boxes)
        assert (holds == p.relation) == (p.answer == "yes")
        assert p.relation in ("left of", "right of", "above", "below")
        assert p.question.startswith(f"Is the {p.subject} ")
    with pytest.raises(SamplingError, match="only 1 exhaustively reviewed"):
        build(["yard"], kind="spatial", images=2)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"datasets": ["nope"]}, "no dataset named 'nope'"),
        ({"datasets": []}, "at least one dataset"),
        ({"kind": "vqa"}, "kind is one of"),
        ({"split": "spatial"}, "POPE split is one of"),
        ({"kind": "spatial", "split": "random"}, "one split 'spatial'"),
        ({"images": 0}, "images must be between"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_recorded(zoo, kw, message):
    args = {"datasets": ["zoo"], "kind": "pope", **kw}
    with pytest.raises(ProbeBuildError, match=message):
        start_probe_set(enqueue=False, **args)
    assert not ProbeSet.objects.exists()


def test_failed_build_leaves_nothing_ready(zoo, settings):
    with pytest.raises(SamplingError):
        build(["zoo"], images=500)
    failed = ProbeSet.objects.get()
    assert failed.status == ProbeSet.Status.FAILED and "only 5" in failed.error
    assert not failed.path and not failed.image_rows.exists()
    assert not list(Path(settings.FGAM_PROBES_DIR).glob("*"))


def test_progress_goes_through_every_phase(zoo):
    seen: list[tuple[str, int, int]] = []
    probe_set = start_probe_set(datasets=["zoo"], kind="pope", images=5, enqueue=False)
    build_probe_set(probe_set_id=probe_set.pk, progress_callback=lambda *a: seen.append(a))
    phases = list(dict.fromkeys(phase for phase, _, _ in seen))
    assert phases == ["reading", "sampling", "checking", "writing", "hashing", "done"]
    assert seen[-1] == ("done", 30, 30)
    probe_set.refresh_from_db()
    assert (probe_set.progress_phase, probe_set.progress_done) == ("done", 30)
