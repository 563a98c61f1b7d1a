"""The "Generate trajectories" form in headless Chromium: a curator starts a seeded trajectory
run from the dataset page against the loopback server and reads the run's latency summary."""

from __future__ import annotations

import pytest

from tests.browser.test_pages import PASSWORD, chromium, page, shots  # noqa: F401 (fixtures)
from tests.catalog.factories import DatasetFactory, QuestionItemFactory, RegionFactory, UserFactory
from tests.jobs.conftest import stored_scene
from tests.workers import trajectory_players as players
from tests.workers.llm_server import LLMServer
from webapp.jobs.models import Run
from webapp.regions.models import Region
from webapp.trajectories.models import Trajectory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_curator_generates_seeded_trajectories_from_the_dataset_page(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    media_root,
):
    UserFactory(username="curie", roles=["curator"])
    dataset = DatasetFactory(name="qa")
    for n in range(3):
        image = stored_scene(dataset, n)
        RegionFactory(
            image=image, phrase="red car", status=Region.Status.ACCEPTED,
            x0=10, y0=60, x1=70, y1=110,
        )  # fmt: skip
        QuestionItemFactory(
            image=image,
            question=f"Q{n}: what colour is the car?",
            reference="The small car on the left is red. So it is easy to see.",
        )
    page.goto(f"{live_server.url}/login/?next=/datasets/qa/")
    page.fill("input[name=username]", "curie")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/datasets/qa/")

    with LLMServer(responder=players.play) as server:
        page.get_by_text("Start a run on this dataset").click()
        form = page.get_by_role("form", name="Generate trajectories")
        form.get_by_label("M", exact=True).fill(f"{server.url}#mllm")
        form.get_by_label("RM", exact=True).fill(f"{server.url}#rm")
        form.get_by_label("K", exact=True).fill("2")
        form.get_by_label("attribute").check()
        form.get_by_label("reasoning").check()
        page.screenshot(path=str(shots / "trajectory-form.png"), full_page=True)
        form.get_by_role("button", name="Generate trajectories").click()
        page.wait_for_url(f"{live_server.url}/runs/*/")
        # Without a broker the run's tasks ran in the request; with one, the page polls.
        page.wait_for_function(
            "document.querySelector('[data-testid=run-status]').innerText === 'succeeded'",
            timeout=30000,
        )

    run = Run.objects.get(kind=Run.Kind.TRAJECTORY)
    assert run.parameters["seeded_errors"] == ["attribute", "reasoning"]
    assert page.get_by_test_id("run-counts").inner_text() == "3 done of 3"
    latency = page.get_by_test_id("run-latency").inner_text()
    assert "steps per trajectory" in latency and "1 revision: 3 trajectories" in latency
    assert Trajectory.objects.filter(run=run).count() == 3
    assert set(Trajectory.objects.values_list("seeded_error", flat=True)) <= {
        "attribute",
        "reasoning",
    }
    page.screenshot(path=str(shots / "trajectory-run.png"), full_page=True)
