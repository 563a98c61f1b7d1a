"""The editor pages: queue, editor, htmx edits with 409 conflicts, history, escaping, queries."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.catalog.factories import ImageFactory, RegionFactory
from tests.trajectories.factories import make_trajectory
from webapp.trajectories.models import Trajectory, TrajectoryChange, TrajectoryLease

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
XSS = '<script>alert(1)</script>" onmouseover="alert(2)'


def edit_url(trajectory):
    return reverse("trajectories:edit", args=[trajectory.pk])


def post_edit(client, trajectory, version, **data):
    return client.post(edit_url(trajectory), {"version": version, **data}, **HX)


def test_raters_get_403_everywhere(client_as, rater, trajectory, dataset):
    client = client_as(rater)
    for url in (
        reverse("trajectories:index"),
        reverse("trajectories:queue", args=[dataset.name]),
        reverse("trajectories:editor", args=[trajectory.pk]),
        reverse("trajectories:history", args=[trajectory.pk]),
    ):
        assert client.get(url).status_code == 403, url
    response = post_edit(client, trajectory, 1, action="question", text="Hacked?")
    assert response.status_code == 403
    assert Trajectory.objects.get(pk=trajectory.pk).question == "What is left of the tree?"


def test_the_editor_shows_the_chain_the_diff_and_the_regions(client_as, annotator, trajectory):
    response = client_as(annotator).get(reverse("trajectories:editor", args=[trajectory.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    for k, text in enumerate(["A red car is left of the tree.", "A blue car is left of the tree."]):
        assert f'data-testid="response-{k}">{text}' in html
    assert "The car is blue, not red. Please revise." in html
    # The word diff between A_0 and A_1 marks exactly the changed word.
    diff = re.search(r'data-testid="diff-1"[^>]*>(.*?)</div>', html, re.S).group(1)
    assert "<del>red</del>" in diff and "<ins>blue</ins>" in diff
    assert diff.count("<ins>") == 1 and diff.count("<del>") == 1
    assert html.count('class="box s-') == 2 and ">car</text>" in html
    assert 'data-testid="response-by-0">tiny-llava' in html
    assert 'value="attribute" data-error-key="2" checked' in html


def test_the_editor_page_costs_the_same_queries_whatever_the_number_of_steps(
    client_as, annotator, image
):
    client = client_as(annotator)
    short = make_trajectory(image, chain=[("One.", "Fix it.", [])])
    long = make_trajectory(
        image, chain=[(f"Answer {k}.", f"Feedback {k}.", ["object"]) for k in range(15)]
    )
    counts = []
    for trajectory in (short, long):
        client.get(reverse("trajectories:editor", args=[trajectory.pk]))  # warm the session
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("trajectories:editor", args=[trajectory.pk]))
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 10


def test_model_text_is_escaped_everywhere(client_as, annotator, image):
    RegionFactory(image=image, phrase=XSS, caption=XSS)
    image.captions = [XSS]
    image.save()
    trajectory = make_trajectory(
        image, question=XSS, chain=[(XSS, XSS, []), ("Fixed " + XSS, XSS, [])],
        final_answer=XSS, model=XSS, rm=XSS, reference_answer=XSS,
    )  # fmt: skip
    client = client_as(annotator)
    pages = [
        client.get(reverse("trajectories:editor", args=[trajectory.pk])),
        client.get(reverse("trajectories:history", args=[trajectory.pk]), **HX),
        client.get(reverse("trajectories:queue", args=[image.dataset.name])),
        client.get(reverse("trajectories:document", args=[trajectory.pk]), **HX),
    ]
    # A conflict panel shows their text and mine.
    post_edit(client, trajectory, 1, action="question", text="Plain?")
    pages.append(post_edit(client, trajectory, 1, action="question", text=XSS))
    assert pages[-1].status_code == 409
    for response in pages:
        html = response.content.decode()
        assert "<script>alert(1)" not in html
        assert '" onmouseover="alert(2)' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_htmx_edit_re_renders_only_what_changed(client_as, annotator, trajectory):
    client = client_as(annotator)
    response = post_edit(client, trajectory, 1, action="feedback", k="0", text="Blue, not red.")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="step-0"' in html and 'id="step-1"' not in html
    assert 'id="question-block"' not in html and 'id="final-block"' not in html
    assert 'data-version="2"' in html and "In Review" in html
    assert 'data-testid="feedback-by-0">user:ann' in html
    # Editing A_0 re-renders step 0 and step 1 (whose diff reads A_0) and the final answer.
    html = post_edit(
        client, trajectory, 2, action="response", k="0", text="A car."
    ).content.decode()
    assert 'id="step-0"' in html and 'id="step-1"' in html and 'id="final-block"' in html


def test_error_types_final_answer_and_approval_through_the_editor(client_as, annotator, trajectory):
    client = client_as(annotator)
    response = post_edit(
        client, trajectory, 1, action="errors", k="0", error_types=["spatial", "object"]
    )
    assert response.status_code == 200
    assert trajectory.steps.get(k=0).error_types == ["object", "spatial"]
    # Approving without a final answer is refused with the reason, and nothing changes.
    response = post_edit(client, trajectory, 2, action="approve")
    assert response.status_code == 422
    assert "set the final answer before approving" in response.content.decode()
    assert post_edit(client, trajectory, 2, action="use_last").status_code == 200
    assert post_edit(client, trajectory, 3, action="approve").status_code == 200
    fresh = Trajectory.objects.get(pk=trajectory.pk)
    assert fresh.final_answer == "A blue car is left of the tree."
    assert fresh.status == "approved" and fresh.version == 4


def test_adding_and_removing_a_step_re_renders_the_chain(client_as, annotator, trajectory):
    client = client_as(annotator)
    html = post_edit(client, trajectory, 1, action="add_step", at="1").content.decode()
    assert 'hx-swap-oob="innerHTML:#chain"' in html
    assert html.count('class="step"') == 3
    # The new answer starts as a copy of the one before it.
    assert trajectory.steps.get(k=1).response == "A red car is left of the tree."
    html = post_edit(client, trajectory, 2, action="remove_step", k="0").content.decode()
    assert html.count('class="step"') == 2


def test_a_stale_edit_gets_409_with_theirs_and_mine_then_keep_mine_wins(
    client_as, annotator, curator, trajectory
):
    post_edit(client_as(curator), trajectory, 1, action="response", k="1", text="Theirs.")
    client = client_as(annotator)
    response = post_edit(client, trajectory, 1, action="response", k="1", text="Mine.")
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#conflict"
    html = response.content.decode()
    assert 'data-testid="theirs">Theirs.' in html and 'data-testid="yours">Mine.' in html
    assert "Now version 2, by cur" in html
    assert Trajectory.objects.get(pk=trajectory.pk).version == 2
    # Keep mine re-sends the same action with the version the panel showed.
    keep = re.search(r"<form[^>]*keep-mine-form.*?</form>", html, re.S).group(0)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', keep))
    assert fields["version"] == "2" and fields["text"] == "Mine."
    assert client.post(edit_url(trajectory), fields, **HX).status_code == 200
    assert trajectory.steps.get(k=1).response == "Mine."


def test_history_lists_changes_and_restore_brings_a_version_back(client_as, annotator, trajectory):
    client = client_as(annotator)
    post_edit(client, trajectory, 1, action="question", text="Where is the car?")
    html = client.get(reverse("trajectories:history", args=[trajectory.pk]), **HX).content.decode()
    assert "Where is the car?" in html and "What is left of the tree?" in html
    created = TrajectoryChange.objects.get(trajectory=trajectory, action="create")
    restore = reverse("trajectories:restore", args=[created.pk])
    assert restore in html
    response = client.post(restore, {"version": 2}, **HX)
    assert response.status_code == 200
    assert 'data-version="3"' in response.content.decode()
    assert Trajectory.objects.get(pk=trajectory.pk).question == "What is left of the tree?"
    assert client.post(restore, {"version": 2}, **HX).status_code == 409


def test_start_leases_the_next_trajectory_and_next_moves_on(client_as, annotator, image, dataset):
    first, second = make_trajectory(image), make_trajectory(image)
    make_trajectory(image, status="approved")
    client = client_as(annotator)
    queue = client.get(reverse("trajectories:queue", args=[dataset.name])).content.decode()
    assert "2 trajectories waiting" in queue
    response = client.post(reverse("trajectories:start", args=[dataset.name]))
    assert response["Location"] == reverse("trajectories:editor", args=[first.pk])
    assert TrajectoryLease.objects.get(user=annotator).trajectory_id == first.pk
    response = client.post(reverse("trajectories:next", args=[first.pk]))
    assert response["Location"] == reverse("trajectories:editor", args=[second.pk])
    assert list(TrajectoryLease.objects.values_list("trajectory_id", flat=True)) == [second.pk]
    # A skipped trajectory stays open, so it comes round again.
    response = client.post(reverse("trajectories:next", args=[second.pk]))
    assert response["Location"] == reverse("trajectories:editor", args=[first.pk])
    # Nothing matches this filter: back to the queue, which says so.
    response = client.post(
        reverse("trajectories:start", args=[dataset.name]), {"error_type": "spatial"}
    )
    assert response["Location"].endswith("?error_type=spatial&empty=1")
    assert "No trajectory waiting" in client.get(response["Location"]).content.decode()


def test_queue_filters_by_error_type_and_seeded_error(client_as, annotator, dataset):
    image = ImageFactory(dataset=dataset)
    make_trajectory(image, chain=[("A.", "F.", ["spatial"])], seeded_error="spatial")
    make_trajectory(image, chain=[("A.", "F.", ["object"])])
    client = client_as(annotator)
    url = reverse("trajectories:queue", args=[dataset.name])
    assert "1 trajectory waiting" in client.get(url, {"error_type": "spatial"}).content.decode()
    assert "1 trajectory waiting" in client.get(url, {"seeded_error": "spatial"}).content.decode()
    assert "0 trajectories" in client.get(url, {"error_type": "reasoning"}).content.decode()
    assert client.get(url, {"error_type": "colour"}).status_code == 404


def test_without_javascript_an_edit_redirects_back(client_as, annotator, trajectory):
    client = client_as(annotator)
    response = client.post(edit_url(trajectory), {"version": 1, "action": "final", "text": "X."})
    assert response.status_code == 302
    assert Trajectory.objects.get(pk=trajectory.pk).final_answer == "X."


def test_curators_upload_a_jsonl_file_from_the_index_page(client_as, curator, annotator, image):
    import json

    from django.core.files.uploadedfile import SimpleUploadedFile

    line = {
        "trajectory": "u1", "step": 0, "image": image.sha256, "question": "Where <b>?",
        "response": "Left.", "feedback": "", "target": "Left of the tree.",
    }  # fmt: skip
    url = reverse("trajectories:import")
    client = client_as(curator)
    assert (
        'enctype="multipart/form-data"'
        in client.get(reverse("trajectories:index")).content.decode()
    )
    bad = SimpleUploadedFile("mine.jsonl", b'{"trajectory": "u2", "step": 0}\n')
    response = client.post(url, {"dataset": image.dataset.name, "file": bad})
    assert response.status_code == 400
    assert "mine.jsonl: line 1: image: missing" in response.content.decode()
    good = SimpleUploadedFile("mine.jsonl", (json.dumps(line) + "\n").encode())
    response = client.post(url, {"dataset": image.dataset.name, "file": good}, follow=True)
    assert "trajectories new: 1" in response.content.decode()
    assert Trajectory.objects.get(source_key="import:u1").steps.count() == 2
    annotator_client = client_as(annotator)
    assert "multipart" not in annotator_client.get(reverse("trajectories:index")).content.decode()
    again = SimpleUploadedFile("mine.jsonl", (json.dumps(line) + "\n").encode())
    assert annotator_client.post(url, {"dataset": "street", "file": again}).status_code == 403


def test_each_save_renews_the_editors_lease(client_as, annotator, trajectory, dataset):
    from datetime import timedelta

    from django.utils import timezone

    client = client_as(annotator)
    client.post(reverse("trajectories:start", args=[dataset.name]))
    soon = timezone.now() + timedelta(seconds=5)
    TrajectoryLease.objects.filter(trajectory=trajectory).update(expires_at=soon)
    assert post_edit(client, trajectory, 1, action="final", text="A.").status_code == 200
    assert TrajectoryLease.objects.get(trajectory=trajectory).expires_at > soon + timedelta(
        seconds=60
    )
