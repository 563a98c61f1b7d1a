"""The quick start's model side in headless Chromium, with the demo models (issue 16): a
pseudo-label run with demo-detector, an image reviewed, a version cut, then a Stage-1 job and
an SFT job that finish with their loss curves on the job pages. Tasks run in-process."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from tests.browser.test_pages import PASSWORD, chromium, page, scenes, shots  # noqa: F401
from tests.catalog.factories import UserFactory
from tests.exports.conftest import make_trajectory
from webapp.exports.models import DatasetVersion, TrainingJob
from webapp.jobs.models import Run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def demo_var(tmp_path_factory):
    var = tmp_path_factory.mktemp("demo-var")
    with pytest.MonkeyPatch.context() as patch:
        from django.conf import settings

        patch.setattr(settings, "VAR_DIR", var)
        call_command("make_demo_models", stdout=io.StringIO())
    return var


def test_the_quick_start_flow_with_the_demo_models(
    page,  # noqa: F811
    live_server,
    scenes,  # noqa: F811
    shots,  # noqa: F811
    demo_var,
    settings,
    tmp_path,
):
    dataset, images = scenes
    settings.VAR_DIR = demo_var
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    for image in images[:4]:  # SFT rows come from trajectories
        make_trajectory(
            image, "What is in the scene?", [("a cat", "There is no cat.", ["object"]),
            ("a red square", "", [])], status="approved", final="a red square",
        )  # fmt: skip
    UserFactory(username="curie", roles=["curator", "annotator"])
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "curie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    # 1. A pseudo-label run with the demo detector, from the dataset page.
    page.goto(f"{live_server.url}/datasets/{dataset.name}/")
    page.locator("details.start-run summary").click()
    form = page.get_by_role("form", name="Start a pseudo-label run")
    assert form.locator("datalist option[value=demo-detector]").count() == 0  # the list is apart
    assert page.locator("#demo-detector-models option[value=demo-detector]").count() == 1
    form.locator("input[name=labels]").fill("square, circle")
    form.locator("input[name=model]").fill("demo-detector")
    form.get_by_role("button", name="Pseudo-label").click()
    page.wait_for_url(f"{live_server.url}/runs/*/")
    run = Run.objects.get(kind=Run.Kind.PSEUDO_LABEL)
    assert run.model_id == str(demo_var / "models" / "demo-detector")
    assert page.get_by_test_id("run-status").inner_text() == "succeeded", run.errors
    page.screenshot(path=str(shots / "demo-pseudo-label-run.png"), full_page=True)

    # 2. Review one image: accept what remains.
    image = images[0]
    page.goto(f"{live_server.url}/review/images/{image.pk}/")
    page.get_by_role("button", name="Accept remaining").click()
    page.wait_for_timeout(500)

    # 3. Cut a version.
    page.goto(f"{live_server.url}/versions/")
    page.locator("select[name=datasets]").select_option(dataset.name)
    page.get_by_role("button", name="Cut version").click()
    page.wait_for_url(f"{live_server.url}/versions/*/")
    version = DatasetVersion.objects.get()
    page.wait_for_function("document.querySelector('[data-testid=version-status]')", timeout=5000)
    page.reload()
    version.refresh_from_db()
    assert version.is_ready, version.error

    # 4. A Stage-1 job and an SFT job on the demo models finish, with loss curves.
    for kind, model, shot in (
        ("stage1", "demo-clip", "demo-stage1-job.png"),
        ("stage2_sft", "demo-llava", "demo-sft-job.png"),
    ):
        page.goto(f"{live_server.url}/versions/{version.pk}/?kind={kind}")
        page.get_by_test_id("demo-model").select_option(model)
        # In-process tasks: the job runs inside this request, and the page comes when it ends.
        with page.expect_navigation(url=f"{live_server.url}/versions/jobs/*/", timeout=120_000):
            page.get_by_role("button", name="Start training job").click(no_wait_after=True)
        job = TrainingJob.objects.order_by("-pk").first()
        assert page.get_by_test_id("job-status").inner_text() == "succeeded", job.log_tail
        assert page.locator("svg.loss-chart polyline[data-term=loss]").count() == 1
        page.screenshot(path=str(shots / shot), full_page=True)
