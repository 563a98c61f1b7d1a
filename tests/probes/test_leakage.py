"""The leakage guard, both directions (``webapp.probes.leakage``, ``exports.writing``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.catalog.factories import QuestionItemFactory
from webapp.exports.services import cut_version, export_version
from webapp.probes.building import ProbeBuildError, build_probe_set, start_probe_set
from webapp.probes.models import ProbeSet

pytestmark = pytest.mark.django_db


def build(**kw) -> ProbeSet:
    probe_set = start_probe_set(datasets=["zoo"], kind="pope", enqueue=False, **kw)
    return build_probe_set(probe_set_id=probe_set.pk)


def cut(out: Path):
    version = cut_version(datasets=["zoo"], out_dir=out, enqueue=False)
    return export_version(version_id=version.pk)


def version_shas(version) -> set[str]:
    index = pq.read_table(Path(version.location) / "stage1" / "index.parquet", columns=["image"])
    return set(index.column("image").to_pylist())


def test_a_version_cut_after_a_probe_set_leaves_its_images_out(zoo, tmp_path):
    images = zoo["images"]
    QuestionItemFactory(image=images["I1"], question="What is on the sofa?", source_key="q1")
    QuestionItemFactory(image=images["R6"], question="What is there?", source_key="q2")
    probe_set = build(images=5, split="popular")
    probe_shas = set(probe_set.manifest["image_sha256s"])
    version = cut(tmp_path / "versions")
    assert version.is_ready
    shas = version_shas(version)
    assert not shas & probe_shas
    assert shas == {images["R6"].sha256, images["U1"].sha256}
    prompts = (Path(version.location) / "stage2" / "rl_prompts.jsonl").read_text().splitlines()
    assert [json.loads(row)["image"] for row in prompts] == [images["R6"].sha256]
    guard = version.manifest["leakage_guard"]
    assert guard["probe_sets"] == [probe_set.set_id]
    assert guard["probe_images_excluded"] == 5 and guard["probe_regions_excluded"] == 15
    assert version.counts["probe_images_excluded"] == 5


def test_a_version_before_any_probe_set_is_untouched(zoo, tmp_path):
    version = cut(tmp_path / "versions")
    assert len(version_shas(version)) == 7
    assert version.manifest["leakage_guard"] == {
        "probe_sets": [], "probe_images_excluded": 0, "probe_regions_excluded": 0,
    }  # fmt: skip


def test_a_failed_probe_set_guards_nothing(zoo, tmp_path):
    with pytest.raises(ValueError):
        build(images=50)
    assert len(version_shas(cut(tmp_path / "versions"))) == 7


def test_building_over_images_a_ready_version_holds_is_refused(zoo, tmp_path):
    version = cut(tmp_path / "versions")
    refused_message = rf"5 probe image\(s\) are already in .*{version.name}"
    with pytest.raises(ProbeBuildError, match=refused_message):
        build(images=5)
    refused = ProbeSet.objects.get()
    assert refused.status == ProbeSet.Status.FAILED and "--allow-seen" in refused.error
    assert not refused.image_rows.exists()

    allowed = build(images=5, allow_seen=True)
    assert allowed.status == ProbeSet.Status.READY
    assert allowed.manifest["allow_seen"] is True
    assert allowed.manifest["seen"] == {"images": 5, "versions": {version.name: 5}}


def test_versions_of_other_datasets_do_not_refuse(zoo, tmp_path):
    from tests.catalog.factories import DatasetFactory, RegionFactory, stored_image

    other = DatasetFactory(name="elsewhere")
    RegionFactory(image=stored_image(other), x0=1, y0=1, x1=20, y1=20, status="accepted")
    version = cut_version(datasets=["elsewhere"], out_dir=tmp_path / "v", enqueue=False)
    assert export_version(version_id=version.pk).is_ready
    probe_set = build(images=5)
    assert probe_set.is_ready and probe_set.manifest["seen"] is None
