"""The quick start's other model flows with the demo models (issue 16), posted to the same form
endpoints the pages use, tasks in-process: a local caption run, a trajectory run (M and RM
local), an RM job and a rectify job each finish, each within 2 minutes. The pseudo-label run and
the Stage-1 and SFT jobs are driven in the browser by tests/browser/test_quick_start_models.py.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command
from django.test import Client

from tests.catalog.factories import DatasetFactory, RegionFactory, UserFactory, stored_image
from tests.exports.conftest import make_trajectory
from training.formats import STOP_PHRASE
from webapp.catalog.models import QuestionItem
from webapp.evaluation import services as evaluation
from webapp.evaluation.models import EvalItem, System
from webapp.exports.models import TrainingJob
from webapp.exports.services import cut_version, export_version
from webapp.jobs.models import Run
from webapp.regions.models import Region

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT_S = 120  # the bound for each flow on 2 cores


@pytest.fixture(scope="module")
def demo_var(tmp_path_factory):
    var = tmp_path_factory.mktemp("demo-var")
    with pytest.MonkeyPatch.context() as patch:
        from django.conf import settings

        patch.setattr(settings, "VAR_DIR", var)
        call_command("make_demo_models", stdout=io.StringIO())
    return var


@pytest.fixture
def demo(demo_var, settings, media_root, tmp_path):
    settings.VAR_DIR = demo_var
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    dataset = DatasetFactory(name="demo")
    for n in range(3):
        image = stored_image(dataset, width=96, height=64, captions=[f"scene {n}"])
        RegionFactory(image=image, x0=4, y0=4, x1=40, y1=40, phrase="square",
                      caption="", status=Region.Status.ACCEPTED)  # fmt: skip
        QuestionItem.objects.create(image=image, question="What is in the scene?")
        make_trajectory(
            image, "What is in the scene?",
            [("a cat", "There is no cat.", ["object"]), ("a red square", STOP_PHRASE, [])],
            status="approved", final="a red square",
        )  # fmt: skip
    user = UserFactory(username="curie", roles=["curator", "annotator"])
    browser = Client()
    browser.force_login(user)
    return dataset, browser


def timed(action):
    start = time.monotonic()
    result = action()
    seconds = time.monotonic() - start
    print(f"{result.request['PATH_INFO']}: {seconds:.1f} s")  # the figure in the closing note
    return result, seconds


def test_a_local_caption_run_and_a_trajectory_run_finish(demo):
    dataset, browser = demo
    _, seconds = timed(
        lambda: browser.post(
            f"/runs/start/{dataset.name}/",
            {"kind": "caption", "strategy": "local", "model": "demo-captioner"},
        )
    )
    run = Run.objects.get(kind=Run.Kind.CAPTION)
    assert run.status == Run.Status.SUCCEEDED, run.errors
    assert seconds < LIMIT_S
    assert Region.objects.filter(image__dataset=dataset).exclude(caption="").count() == 3

    _, seconds = timed(
        lambda: browser.post(
            f"/runs/start/{dataset.name}/",
            {"kind": "trajectory", "m": "demo-llava", "rm": "demo-rm", "k": "1"},
        )
    )
    run = Run.objects.get(kind=Run.Kind.TRAJECTORY)
    assert run.status == Run.Status.SUCCEEDED, run.errors
    assert seconds < LIMIT_S
    assert run.done >= 3 and run.failed == 0


def test_an_rm_job_and_a_rectify_job_finish(demo, tmp_path):
    dataset, browser = demo
    version = export_version(
        version_id=cut_version(datasets=[dataset.name], out_dir=tmp_path, enqueue=False).pk
    )
    _, seconds = timed(
        lambda: browser.post(
            f"/versions/{version.pk}/train/", {"kind": "rm", "demo_model": "demo-rm"}
        )
    )
    job = TrainingJob.objects.get(kind="rm")
    assert job.status == TrainingJob.Status.SUCCEEDED, job.log_tail
    assert seconds < LIMIT_S
    assert job.metrics.exists()

    round_ = evaluation.create_round(name="demo-round")
    for n, image in enumerate(dataset.images.order_by("id")):
        EvalItem.objects.create(
            round=round_, key=f"q{n}", image=image, question="What is in the scene?", position=n
        )
    system = evaluation.add_system(round_=round_, name="demo-llava")
    _, seconds = timed(
        lambda: browser.post(
            f"/evaluation/systems/{system.pk}/generate",
            {"model": "demo-llava", "rm": "demo-rm", "k": "1"},
        )
    )
    system.refresh_from_db()
    assert system.status == System.Status.READY, system.error
    assert seconds < LIMIT_S
    assert system.responses.count() == 3
