"""Progress while a version is cut: bounded-rate updates of the row, the polled page block."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.api.conftest import make_user
from tests.catalog.factories import DatasetFactory
from webapp.core.roles import CURATOR
from webapp.exports.models import DatasetVersion
from webapp.exports.progress import ExportProgress


@pytest.mark.django_db(transaction=True)
def test_progress_reaches_the_row_at_a_bounded_rate_not_per_row():
    version = DatasetVersion.objects.create(name="v-progress", status="running")
    seen = []
    progress = ExportProgress(version.pk, every_s=60, callback=lambda *f: seen.append(f))
    progress.start_phase("stage1", total=10_000)
    for _ in range(10_000):
        progress.advance(1)
    assert progress.updates == 1  # the phase start only: no per-row writes
    progress.start_phase("trajectories")
    progress.close()
    version.refresh_from_db()
    assert (version.progress_phase, version.progress_done, version.progress_total) == (
        "trajectories", 10_000, 10_000,
    )  # fmt: skip
    assert version.progress_at is not None
    assert seen == [("stage1", 0, 10_000), ("trajectories", 10_000, 10_000)]


@pytest.mark.django_db(transaction=True)
def test_a_real_export_publishes_its_phases_to_the_row(reviewed, tmp_path):
    from webapp.exports.services import cut_version, export_version

    seen = []
    version = cut_version(datasets=["street"], out_dir=tmp_path, enqueue=False)
    export_version(version_id=version.pk, progress_callback=lambda *f: seen.append(f))
    phases = [phase for phase, _, _ in seen]
    assert phases[:2] == ["counting", "stage1"] and phases[-1] == "publishing"
    assert {"questions", "trajectories", "hashing"} <= set(phases)
    version.refresh_from_db()
    assert version.status == "ready" and version.progress_phase == "done"
    assert (version.progress_done, version.progress_total) == (24, 24)  # 16 regions, 8 questions
    assert version.progress_percent == 100.0


@pytest.mark.django_db
def test_the_version_page_polls_its_progress_block_until_the_version_is_done():
    DatasetFactory(name="street")
    version = DatasetVersion.objects.create(
        name="v-run", status="running", progress_phase="stage1", progress_done=250,
        progress_total=1000,
    )  # fmt: skip
    browser = Client()
    browser.force_login(make_user("cur", CURATOR))
    page = browser.get(f"/versions/{version.pk}/").content.decode()
    assert 'id="version-progress"' in page and 'hx-trigger="every 2s"' in page
    assert 'aria-valuenow="25.0"' in page

    poll = browser.get(
        f"/versions/{version.pk}/", headers={"HX-Request": "true", "HX-Target": "version-progress"}
    )
    html = poll.content.decode()
    assert html.lstrip().startswith('<section id="version-progress"')
    assert "250 of 1000 rows written" in html and "stage1" in html
    assert "HX-Request" in poll["Vary"]
    listing = browser.get("/versions/").content.decode()
    assert 'hx-select="#version-rows"' in listing and 'aria-valuenow="25.0"' in listing

    DatasetVersion.objects.filter(pk=version.pk).update(status="ready")
    done = browser.get(
        f"/versions/{version.pk}/", headers={"HX-Request": "true", "HX-Target": "version-progress"}
    )
    assert done.status_code == 204 and done["HX-Refresh"] == "true"
    assert 'hx-trigger="every 2s"' not in browser.get(f"/versions/{version.pk}/").content.decode()


@pytest.mark.django_db
def test_the_job_form_shows_the_defaults_of_the_chosen_kind(reviewed, tmp_path):
    from webapp.exports.services import cut_version, export_version

    version = export_version(
        version_id=cut_version(datasets=["street"], out_dir=tmp_path, enqueue=False).pk
    )
    browser = Client()
    browser.force_login(make_user("cur", CURATOR))
    stage1 = browser.get(f"/versions/{version.pk}/").content.decode()
    assert "&quot;vision_tower" not in stage1 and "&quot;beta&quot;: 0.5" in stage1
    assert "&quot;rtcl_reduction&quot;: &quot;paper&quot;" in stage1  # Eq. 1 scale by default
    sft = browser.get(
        f"/versions/{version.pk}/?kind=stage2_sft",
        headers={"HX-Request": "true", "HX-Target": "job-config"},
    ).content.decode()
    assert sft.lstrip().startswith('<div id="job-config"')
    assert "&quot;vision_tower&quot;" in sft and "&quot;beta&quot;" not in sft
    assert '<option value="stage2_sft" selected>' in sft
