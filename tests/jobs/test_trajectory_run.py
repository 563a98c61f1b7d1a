"""Trajectory runs in eager mode against a real OpenAI-compatible server on loopback that plays
M and the RM (tests/workers/trajectory_players.py): trajectories, steps, latencies, provenance,
failures per item, retries without duplicates, seeded errors of each type, the command and the
"Generate trajectories" form."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from tests.catalog.factories import QuestionItemFactory, RegionFactory
from tests.jobs.conftest import stored_scene
from tests.jobs.test_views import logged_in
from tests.workers import trajectory_players as players
from tests.workers.llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, LLMServer, images_in
from training.formats import STOP_PHRASE
from training.geometry import spatial_relation
from training.stage2.prompts import prompt_versions
from webapp.catalog.models import Dataset, QuestionItem
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import batch_task_for, cancel_run, resume_run, retry_failed
from webapp.jobs.trajectories import process_trajectory_batch, start_trajectory_run
from webapp.regions.models import Region
from webapp.trajectories.generation import Generated, write_generated
from webapp.trajectories.models import Trajectory, TrajectoryChange
from workers.seeded_errors import COLOURS, LARGE_WORDS

pytestmark = pytest.mark.django_db

REFERENCE = "The dog is to the right of the red car. Therefore the small dog is near the road."
CAR, DOG, KITE, BIKE = (10, 60, 70, 110), (100, 60, 150, 100), (0, 0, 30, 20), (5, 5, 50, 50)


@pytest.fixture
def server():
    with LLMServer(responder=players.play) as running:
        yield running


@pytest.fixture
def scenes(media_root) -> Dataset:
    """Three stored images, each with an accepted red car and dog, a pending kite, and one
    question with a reference answer; a fourth image holds the only bicycle."""
    from tests.catalog.factories import DatasetFactory

    dataset = DatasetFactory(name="qa")
    for n in range(3):
        image = stored_scene(dataset, n)
        for phrase, box, status in (
            ("red car", CAR, Region.Status.ACCEPTED),
            ("dog", DOG, Region.Status.ACCEPTED),
            ("kite", KITE, Region.Status.PENDING),
        ):
            RegionFactory(
                image=image,
                phrase=phrase,
                caption=f"a {phrase} in scene {n}",
                status=status,
                x0=box[0],
                y0=box[1],
                x1=box[2],
                y1=box[3],
            )
        QuestionItemFactory(image=image, question=f"Q{n}: where is the dog?", reference=REFERENCE)
    other = stored_scene(dataset, 9)
    RegionFactory(
        image=other, phrase="bicycle", status=Region.Status.ACCEPTED, x0=5, y0=5, x1=50, y1=50
    )
    return dataset


def spec(server: LLMServer, model: str) -> str:
    return f"{server.url}#{model}"


def start(run_eagerly, dataset, server, **options) -> Run:
    options = {"m": spec(server, "mllm"), "rm": spec(server, "rm"), "max_retries": 1} | options
    return run_eagerly(start_trajectory_run, dataset=dataset, **options)


def test_a_run_writes_trajectories_with_steps_latencies_and_provenance(scenes, server, run_eagerly):
    run = start(run_eagerly, scenes, server, k=2, batch_size=2)

    assert (run.status, run.total, run.done, run.failed) == (Run.Status.SUCCEEDED, 3, 3, 0)
    assert run.parameters["queue"] == "llm"
    assert batch_task_for(run).name == "fgam.llm.trajectory_batch"
    assert run.parameters["prompt_versions"] == prompt_versions()
    assert run.batches.count() == 2
    trajectories = Trajectory.objects.filter(run=run).order_by("pk")
    assert trajectories.count() == 3
    for trajectory in trajectories:
        assert trajectory.status == Trajectory.Status.GENERATED
        assert trajectory.outcome == Trajectory.Outcome.ACCEPTED
        assert (trajectory.model_id, trajectory.rm_id) == ("mllm", "rm")
        assert trajectory.prompt_versions == prompt_versions()
        assert trajectory.final_answer == players.REVISED_ANSWER
        assert trajectory.reference_answer == REFERENCE
        assert trajectory.question == trajectory.question_item.question
        assert trajectory.image_id == trajectory.question_item.image_id
        assert trajectory.seeded_error == ""
        steps = list(trajectory.steps.order_by("k"))
        assert [(s.k, s.response, s.feedback) for s in steps] == [
            (0, players.FIRST_ANSWER, players.FEEDBACK),
            (1, players.REVISED_ANSWER, STOP_PHRASE),
        ]
        assert {(s.response_by, s.feedback_by) for s in steps} == {("mllm", "rm")}
        assert all(s.m_latency_ms > 0 and s.rm_latency_ms > 0 for s in steps)
        [change] = TrajectoryChange.objects.filter(trajectory=trajectory)
        assert (change.action, change.version, change.run_id, change.user) == (
            "create",
            1,
            run.pk,
            None,
        )
        assert [s["response"] for s in change.after["steps"]] == [s.response for s in steps]
    latency = run.summary["latency"]
    assert latency["trajectories"] == 3 and latency["mean_steps"] == 2.0
    assert latency["mean_m_ms"] > 0 and latency["mean_rm_ms"] > 0
    assert latency["query_ms_by_revisions"]["1"]["trajectories"] == 3
    assert run.summary["outcomes"] == {"accepted": 3}
    # Every call's usage, as the server reported it: 4 calls per trajectory.
    assert (run.prompt_tokens, run.completion_tokens) == (
        12 * PROMPT_TOKENS,
        12 * COMPLETION_TOKENS,
    )


def test_the_rm_gets_the_accepted_regions_in_id_order_and_no_image(scenes, server, run_eagerly):
    start(run_eagerly, scenes, server, k=0, question_filter={"max_id": 10**9})

    critique = server.last_request[""]
    text = players.prompt_of(critique)
    assert players.is_critique(critique) and images_in(critique) == []
    evidence = text.split("then relations):\n", 1)[1].splitlines()
    assert evidence[0].startswith("red car [10, 60, 70, 110]: a red car in scene")
    assert evidence[1].startswith("dog [100, 60, 150, 100]: a dog in scene")
    assert evidence[2] == "red car left of dog"
    assert "kite" not in text  # pending: not evidence


def test_m_receives_the_stored_image(scenes, run_eagerly):
    seen: list[int] = []

    def responder(request):
        if not players.is_critique(request):
            seen.append(len(images_in(request)))
        return players.play(request)

    with LLMServer(responder=responder) as server:
        start(run_eagerly, scenes, server, k=1)
    assert seen and set(seen) == {1}


def test_an_image_without_stored_bytes_fails_its_item_only(scenes, server, run_eagerly):
    image = scenes.images.order_by("pk").first()
    type(image).objects.filter(pk=image.pk).update(storage_path="images/gone.png")

    run = start(run_eagerly, scenes, server, k=1)

    assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 2, 1)
    [error] = run.errors
    assert error["id"] == QuestionItem.objects.get(image=image).pk
    assert not Trajectory.objects.filter(image=image).exists()


def test_a_failing_item_is_recorded_the_rest_goes_on_and_a_retry_does_not_duplicate(
    scenes, run_eagerly
):
    script = {"Q1:": ["500"] * 2}  # both attempts of the first try (max_retries=1)
    with LLMServer(script=script, responder=players.play) as server:
        run = start(run_eagerly, scenes, server, k=1, batch_size=3)
        assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 2, 1)
        failed_item = QuestionItem.objects.get(question__startswith="Q1:")
        [error] = run.errors
        assert error["id"] == failed_item.pk
        assert (
            error["error"].startswith("mllm: HTTP 500") and "after 2 attempt(s)" in error["error"]
        )
        assert Trajectory.objects.filter(run=run).count() == 2
        calls_before = server.total

        # The server is well again: retrying runs only the failed item, once.
        assert run_eagerly(retry_failed, run=run) == 1
        run.refresh_from_db()
        assert (run.status, run.done, run.failed, run.errors) == (Run.Status.SUCCEEDED, 3, 0, [])
        assert server.total - calls_before == 4  # A_0, F_0, A_1, F_1 of one item
    assert Trajectory.objects.filter(run=run).count() == 3
    assert Trajectory.objects.filter(run=run, question_item=failed_item).count() == 1


def test_a_batch_handed_out_again_calls_no_model_and_writes_nothing_twice(
    scenes, server, run_eagerly
):
    run = start(run_eagerly, scenes, server, k=1, batch_size=3)
    calls = server.total
    batch = run.batches.get()
    # As after a resume that found the batch "running" although its attempt had finished.
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    RunBatch.objects.filter(pk=batch.pk).update(status=RunBatch.Status.QUEUED)

    assert process_trajectory_batch(batch_id=batch.pk) is not None
    assert server.total == calls
    assert Trajectory.objects.filter(run=run).count() == 3
    assert TrajectoryChange.objects.filter(run=run).count() == 3


def test_writing_the_same_results_twice_writes_them_once(scenes, server, run_eagerly):
    run = start(run_eagerly, scenes, server, k=0)
    trajectory = Trajectory.objects.filter(run=run).first()
    from training.stage2.generators import make_generator
    from workers.trajectories import TrajectoryItem, run_batch

    m, rm = make_generator(spec(server, "mllm")), make_generator(spec(server, "rm"))
    [outcome] = run_batch([TrajectoryItem(key="x", question="Q?")], m=m, rm=rm, k=0)
    again = Generated(trajectory.question_item, outcome.rectification)
    assert write_generated(run=run, generated=[again]) == []
    assert Trajectory.objects.filter(run=run).count() == 3


def test_a_cancelled_run_resumes_and_plans_its_questions(
    scenes, server, run_eagerly, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        run = start_trajectory_run(
            dataset=scenes, m=spec(server, "mllm"), rm=spec(server, "rm"), k=1, batch_size=1
        )
    cancel_run(run=run)
    for callback in queued:
        callback()  # the planner arrives after the cancel: it plans nothing
    assert server.total == 0 and not run.batches.exists()

    run = run_eagerly(resume_run, run=run)

    assert (run.status, run.total, run.done) == (Run.Status.SUCCEEDED, 3, 3)
    assert run.batches.count() == 3
    assert Trajectory.objects.filter(run=run).count() == 3


# --- Seeded errors through the whole run -------------------------------------------------------


def _check_attribute(step0: str, detail: dict) -> None:
    # "small" (a size) or the "red" of "red car" (a colour): one word, swapped in place.
    start, before, after = detail["start"], detail["from"], detail["to"]
    assert REFERENCE[start : start + len(before)].lower() == before
    assert step0 == REFERENCE[:start] + after + REFERENCE[start + len(before) :]
    if before == "small":
        assert after in LARGE_WORDS
    else:
        assert before == "red" and COLOURS[after] != "red"


def _check_spatial(step0: str, detail: dict) -> None:
    assert (detail["subject"], detail["object"]) == ("dog", "red car")
    assert spatial_relation(DOG, CAR) == "right of" != detail["to"]
    assert step0 == REFERENCE.replace("to the right of", "to the left of")


def _check_object(step0: str, detail: dict) -> None:
    # The only phrase of the dataset that is not on these images (kite is, though pending).
    assert detail["object"] == "bicycle"
    assert "bicycle" in step0 and "bicycle" not in REFERENCE


def _check_reasoning(step0: str, detail: dict) -> None:
    before, after = re.split(r"(?<=\.) ", REFERENCE), re.split(r"(?<=\.) ", step0)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
    assert detail["before"] in before and detail["after"] in after


@pytest.mark.parametrize(
    "error_type, check",
    [
        ("attribute", _check_attribute),
        ("spatial", _check_spatial),
        ("object", _check_object),
        ("reasoning", _check_reasoning),
    ],
)
def test_a_seeded_run_injects_the_error_records_it_and_the_rm_critiques_it(
    scenes, server, run_eagerly, error_type, check
):
    run = start(run_eagerly, scenes, server, k=2, seeded_errors=[error_type], seed=5)

    assert (run.status, run.done, run.failed) == (Run.Status.SUCCEEDED, 3, 0)
    for trajectory in Trajectory.objects.filter(run=run):
        assert trajectory.seeded_error == error_type
        step0 = trajectory.steps.get(k=0)
        assert step0.response_by == f"seeded:{error_type}"
        assert step0.error_types == [error_type]
        assert step0.m_latency_ms is None and step0.rm_latency_ms > 0
        assert step0.response != REFERENCE
        seeded = trajectory.changes.get().after["seeded"]
        assert (seeded["type"], seeded["original"], seeded["corrupted"]) == (
            error_type,
            REFERENCE,
            step0.response,
        )
        check(step0.response, seeded["detail"])
        # The RM critiqued the seeded answer; M revised it.
        assert step0.feedback == players.FEEDBACK
        assert trajectory.final_answer == players.REVISED_ANSWER
        assert trajectory.steps.get(k=1).response_by == "mllm"
    if error_type == "object":
        assert "bicycle" in run.parameters["object_vocabulary"]
        page = logged_in(CURATOR).get(f"/runs/{run.pk}/").content.decode()
        assert 'object_vocabulary</dt><dd class="break">4: bicycle, dog, kite, red car' in page


def test_a_seeded_run_skips_items_without_a_reference_and_records_impossible_injections(
    scenes, server, run_eagerly
):
    image = scenes.images.order_by("pk").first()
    QuestionItemFactory(image=image, question="No reference?", reference=None)
    QuestionItemFactory(image=image, question="Too short?", reference="A dog.")

    run = start(run_eagerly, scenes, server, k=1, seeded_errors=["reasoning"])

    assert (run.total, run.done, run.failed) == (4, 3, 1)  # the reference-less one is not selected
    [error] = run.errors
    assert error["error"].startswith("seeded error: reasoning: the answer is one sentence")
    assert not Trajectory.objects.filter(question="Too short?").exists()


# --- Starting runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 11}, "k must be between 0 and 10"),
        ({"m": "http://127.0.0.1:9/v1"}, "m: an endpoint is written URL#MODEL"),
        ({"seeded_errors": ["colour"]}, "seeded_errors: 'colour' not among"),
        ({"question_filter": {"colour": 1}}, r"question_filter: unknown keys \['colour'\]"),
        ({"question_filter": {"split": "nope"}}, "question_filter.split"),
        ({"concurrency": 0}, "concurrency must be between"),
        ({"dtype": "int3"}, "dtype must be one of"),
    ],
)
def test_bad_parameters_are_refused_with_the_name_of_the_field(scenes, options, message):
    with pytest.raises(ValueError, match=message):
        start_trajectory_run(dataset=scenes, **options)
    assert not Run.objects.exists()


def test_a_local_model_sends_the_run_to_the_gpu_queue(scenes, server, tmp_path):
    run = start_trajectory_run(dataset=scenes, m=str(tmp_path / "llava"), rm=spec(server, "rm"))
    assert run.parameters["queue"] == "gpu"
    assert batch_task_for(run).name == "fgam.gpu.trajectory_batch_local"
    assert run.parameters["batch_size"] == 8


def test_defaults_come_from_the_settings(scenes, settings):
    settings.FGAM_LLM_BASE_URL = "http://127.0.0.1:9/v1"
    run = start_trajectory_run(dataset=scenes)
    assert run.parameters["m"] == f"http://127.0.0.1:9/v1#{settings.FGAM_MLLM_MODEL}"
    assert run.parameters["rm"] == f"http://127.0.0.1:9/v1#{settings.FGAM_RM_MODEL}"
    assert run.model_id == run.parameters["m"]


def test_the_tiny_local_llava_runs_through_the_whole_run(scenes, server, run_eagerly, tmp_path):
    from training.stage2.tiny import build_tiny_llava

    folder = str(build_tiny_llava(tmp_path / "llava"))
    run = start(
        run_eagerly, scenes, server, m=folder, k=1, device="cpu", max_new_tokens=6,
        question_filter={"max_id": 10**9},
    )  # fmt: skip

    assert run.parameters["queue"] == "gpu"
    assert run.done + run.failed == 3
    for trajectory in Trajectory.objects.filter(run=run):
        assert trajectory.model_id == folder and trajectory.rm_id == "rm"
        step0 = trajectory.steps.get(k=0)
        assert step0.response_by == folder and step0.m_latency_ms > 0
    # A random model may write nothing: that is a recorded failure, never a silent step.
    for error in run.errors:
        assert "malformed output" in error["error"]


# --- Command and form --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_command_follows_the_run_to_its_end(scenes, server):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "generate_trajectories",
        *("--dataset", "qa", "--m", spec(server, "mllm"), "--rm", spec(server, "rm")),
        *("-k", "2", "--seeded-errors", "attribute,spatial", "--seed", "3", "--wait"),
        *("--poll", "0.05"),
        stdout=out,
        stderr=err,
    )
    run = Run.objects.get(kind=Run.Kind.TRAJECTORY)
    assert f"run {run.pk} succeeded: 3 done, 0 failed of 3" in out.getvalue()
    assert run.parameters["seeded_errors"] == ["attribute", "spatial"]
    assert set(Trajectory.objects.values_list("seeded_error", flat=True)) <= {
        "attribute",
        "spatial",
    }


def test_a_curator_starts_a_trajectory_run_from_the_dataset_page(scenes, server):
    client = logged_in(CURATOR)
    page = client.get(f"/datasets/{scenes.name}/")
    assert 'aria-label="Generate trajectories"' in page.content.decode()

    response = client.post(
        f"/runs/start/{scenes.name}/",
        {
            "kind": "trajectory",
            "m": spec(server, "mllm"),
            "rm": spec(server, "rm"),
            "k": "2",
            "seeded_errors": ["object", "spatial"],
        },
    )
    run = Run.objects.get(kind=Run.Kind.TRAJECTORY)
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.parameters["k"] == 2 and run.parameters["seeded_errors"] == ["object", "spatial"]


def test_a_bad_k_in_the_form_is_a_message_not_a_500(scenes):
    client = logged_in(CURATOR)
    response = client.post(
        f"/runs/start/{scenes.name}/", {"kind": "trajectory", "k": "x"}, follow=True
    )
    assert "The run was not started: K must be a whole number" in response.content.decode()
    assert not Run.objects.exists()


def test_an_annotator_cannot_start_one(scenes):
    response = logged_in(ANNOTATOR).post(f"/runs/start/{scenes.name}/", {"kind": "trajectory"})
    assert response.status_code == 403


def test_the_run_page_shows_the_latency_summary(scenes, server, run_eagerly):
    run = start(run_eagerly, scenes, server, k=1)
    page = logged_in(CURATOR).get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="run-latency"' in page
    assert "2.00 steps per trajectory" in page
    assert "1 revision: 3 trajectories" in page


def test_a_curator_starts_a_trajectory_run_through_the_api(
    scenes, server, django_capture_on_commit_callbacks
):
    client = logged_in(CURATOR)
    body = {
        "dataset": scenes.pk,
        "m": spec(server, "mllm"),
        "rm": spec(server, "rm"),
        "k": 2,
        "seeded_errors": ["attribute"],
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/runs/trajectories/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.kind == Run.Kind.TRAJECTORY and run.parameters["seeded_errors"] == ["attribute"]
    assert Trajectory.objects.filter(run=run, seeded_error="attribute").exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"k": 99}, "k"),
        ({"seeded_errors": ["colour"]}, "seeded_errors"),
        ({"dataset": 10**9}, "dataset"),
        ({"m": "http://host/v1"}, "non_field_errors"),
    ],
)
def test_the_api_names_the_bad_field(scenes, body, field):
    response = logged_in(CURATOR).post(
        "/api/runs/trajectories/", {"dataset": scenes.pk} | body, content_type="application/json"
    )
    assert response.status_code == 400 and field in response.json(), response.content
    assert not Run.objects.exists()


def test_an_annotator_cannot_start_one_through_the_api(scenes):
    response = logged_in(ANNOTATOR).post(
        "/api/runs/trajectories/", {"dataset": scenes.pk}, content_type="application/json"
    )
    assert response.status_code == 403
