"""Benchmark jobs end to end: the real ``python -m training bench`` against a scripted
OpenAI-compatible server on loopback, run in-process (no broker: the task runs eagerly), then
what the job page, the wrong-answers list and the API show."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.api.conftest import make_user
from tests.benchmarks.fixtures import EXPECTED_ALL, PROBES, SCRIPT, WRONG
from webapp.benchmarks.models import BenchmarkAnswer, BenchmarkJob
from webapp.benchmarks.services import BenchmarkError, start_benchmark
from webapp.core.roles import ANNOTATOR, CURATOR
from webapp.exports.models import DatasetVersion, TrainingJob

pytestmark = pytest.mark.django_db


def run_on_endpoint(probe_set, server, capture, **options) -> BenchmarkJob:
    with capture(execute=True):
        job = start_benchmark(
            probe_set=probe_set, model_spec=f"{server.url}#scripted", concurrency=4, **options
        )
    job.refresh_from_db()
    assert job.status == "done", (job.error, job.log_tail)
    return job


def wrong_objects(html: str) -> set[str]:
    return set(re.findall(r'data-object="([^"]+)"', html))


def test_an_endpoint_job_scores_every_probe_and_stores_the_scripted_answers(
    probe_set, scripted_server, bench_dirs, django_capture_on_commit_callbacks
):
    job = run_on_endpoint(probe_set, scripted_server, django_capture_on_commit_callbacks)
    assert job.queue == "llm"
    assert job.command[1:4] == ["-m", "training", "bench"]
    assert "--concurrency" in job.command and "4" in job.command
    assert (job.progress_done, job.progress_total) == (8, 8)
    assert scripted_server.total == 8
    for parser, expected in EXPECTED_ALL.items():
        got = job.metrics["splits"]["all"][parser]
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (parser, key)
    answers = {a.object: a for a in BenchmarkAnswer.objects.filter(job=job)}
    assert {obj: a.answer for obj, a in answers.items()} == SCRIPT
    assert answers["apple"].pope == "no" and answers["apple"].strict == ""
    assert answers["dog"].boxes == [[4, 4, 30, 40]] and answers["dog"].width == 64
    for parser, objects in WRONG.items():
        assert {o for o, a in answers.items() if not a.correct(parser)} == objects


def test_the_job_page_shows_the_metrics_per_split_and_parser(
    probe_set, scripted_server, bench_dirs, django_capture_on_commit_callbacks
):
    job = run_on_endpoint(probe_set, scripted_server, django_capture_on_commit_callbacks)
    browser = Client()
    browser.force_login(make_user("annie", ANNOTATOR))
    html = browser.get(f"/benchmarks/{job.pk}/").content.decode()
    for split in ("all", "random", "popular"):
        for parser in ("strict", "pope", "word"):
            assert f'data-split="{split}" data-parser="{parser}"' in html
    row = html[html.index('data-split="all" data-parser="pope"') :]
    row = row[: row.index("</tr>")]
    assert 'data-metric="accuracy">0.625<' in row
    assert 'data-metric="precision">0.600<' in row and 'data-metric="recall">0.750<' in row
    assert "<strong>0.667</strong>" in row and 'data-metric="unparsed">0<' in row
    assert re.search(r'data-metric="wrong"><a [^>]*>3</a>', row)
    strict_popular = html[html.index('data-split="popular" data-parser="strict"') :]
    assert 'data-metric="accuracy">0.250<' in strict_popular[: strict_popular.index("</tr>")]
    # No polling once done; the list of jobs links here.
    assert 'hx-trigger="every 2s"' not in html
    assert f"/benchmarks/{job.pk}/" in browser.get("/benchmarks/").content.decode()


def test_the_wrong_answers_list_filters_by_parser_split_and_object(
    probe_set, scripted_server, bench_dirs, django_capture_on_commit_callbacks
):
    job = run_on_endpoint(probe_set, scripted_server, django_capture_on_commit_callbacks)
    browser = Client()
    browser.force_login(make_user("annie", ANNOTATOR))
    url = f"/benchmarks/{job.pk}/answers/"
    html = browser.get(url).content.decode()
    assert wrong_objects(html) == WRONG["strict"]
    assert "There is not an apple." in html and "Is there an apple in the image?" in html
    assert wrong_objects(browser.get(url + "?parser=pope").content.decode()) == WRONG["pope"]
    popular = {obj for obj, _, split, _, _ in PROBES if split == "popular"}
    html = browser.get(url + "?split=popular").content.decode()
    assert wrong_objects(html) == WRONG["strict"] & popular
    assert wrong_objects(browser.get(url + "?object=car").content.decode()) == {"car"}
    assert len(wrong_objects(browser.get(url + "?show=all").content.decode())) == 8
    assert browser.get(url + "?parser=nope").status_code == 404
    # The apple's box is drawn over its image, which comes from the probe-set folder.
    html = browser.get(url + "?object=apple").content.decode()
    assert '<rect x="10" y="10" width="40" height="30">' in html
    apple = BenchmarkAnswer.objects.get(job=job, object="apple")
    image = browser.get(f"/benchmarks/{job.pk}/images/{apple.probe_id}/")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")
    assert browser.get(f"/benchmarks/{job.pk}/images/999/").status_code == 404


def test_the_wrong_answers_list_pages_with_load_more(
    probe_set, scripted_server, bench_dirs, django_capture_on_commit_callbacks, monkeypatch
):
    job = run_on_endpoint(probe_set, scripted_server, django_capture_on_commit_callbacks)
    monkeypatch.setattr("webapp.benchmarks.views.ANSWERS_PAGE_SIZE", 3)
    browser = Client()
    browser.force_login(make_user("annie", ANNOTATOR))
    first = browser.get(f"/benchmarks/{job.pk}/answers/").content.decode()
    assert len(wrong_objects(first)) == 3
    more = re.search(r'hx-get="([^"]+after=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    rest = browser.get(more, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in rest
    assert wrong_objects(first) | wrong_objects(rest) == WRONG["strict"]
    assert "Load more" not in rest


def test_the_api_lists_a_job_with_its_metrics_and_answers(
    probe_set, scripted_server, bench_dirs, django_capture_on_commit_callbacks
):
    job = run_on_endpoint(probe_set, scripted_server, django_capture_on_commit_callbacks)
    api = Client()
    api.force_login(make_user("annie", ANNOTATOR))
    listing = api.get("/api/benchmarks/").json()
    assert [row["id"] for row in listing["results"]] == [job.pk]
    detail = api.get(f"/api/benchmarks/{job.pk}/").json()
    assert detail["probe_set"] == "bench-test" and detail["status"] == "done"
    assert detail["metrics"]["splits"]["all"]["pope"]["accuracy"] == pytest.approx(0.625)
    assert api.get(f"/api/benchmarks/?probe_set={probe_set.pk}").json()["results"]
    assert api.get("/api/benchmarks/?status=failed").json()["results"] == []
    assert api.get("/api/benchmarks/?colour=red").status_code == 400
    wrong = api.get(f"/api/benchmarks/{job.pk}/answers/?wrong=true&parser=pope").json()
    assert {row["object"] for row in wrong["results"]} == WRONG["pope"]
    # Annotators read; starting one is the curator's.
    body = {"probe_set": probe_set.pk, "model_spec": "llava-hf/llava-1.5-7b-hf"}
    assert api.post("/api/benchmarks/", body, content_type="application/json").status_code == 403


def test_a_curator_starts_one_from_the_api_and_bad_requests_are_400(probe_set, bench_dirs):
    api = Client()
    api.force_login(make_user("cora", CURATOR))
    post = lambda body: api.post("/api/benchmarks/", body, content_type="application/json")  # noqa: E731
    assert post({"probe_set": 999999, "model_spec": "x/y"}).status_code == 400
    answer = post({"probe_set": probe_set.pk, "model_spec": "http://127.0.0.1:9/v1"})
    assert answer.status_code == 400 and "URL#MODEL" in json.dumps(answer.json())
    # A local folder that is not there is refused before anything is queued.
    created = post({"probe_set": probe_set.pk, "model_spec": "/no/such/model", "batch_size": 2})
    assert created.status_code == 400 and "does not exist" in json.dumps(created.json())


def stage1_job(tmp_path, kind=TrainingJob.Kind.STAGE1, **fields) -> TrainingJob:
    version = DatasetVersion.objects.create(name=f"v-{kind}", status="ready")
    return TrainingJob.objects.create(
        version=version, kind=kind, status="succeeded", out_dir=str(tmp_path / kind), **fields
    )


def test_a_stage1_job_is_refused_with_a_clear_message(probe_set, bench_dirs, tmp_path):
    job = stage1_job(tmp_path)
    with pytest.raises(BenchmarkError, match="Stage-1 job: it trains a region-aware CLIP"):
        start_benchmark(probe_set=probe_set, training_job=job)
    with pytest.raises(BenchmarkError, match="rectification module"):
        start_benchmark(probe_set=probe_set, training_job=stage1_job(tmp_path, kind="rm"))
    # A named ablation runs as the kind whose presets hold it: itcl_only is Stage-1's.
    ablation = stage1_job(tmp_path, kind="ablation", preset="itcl_only")
    with pytest.raises(BenchmarkError, match="Stage-1 job"):
        start_benchmark(probe_set=probe_set, training_job=ablation)
    browser = Client()
    browser.force_login(make_user("cora", CURATOR))
    answer = browser.post(
        "/benchmarks/start/", {"probe_set": probe_set.pk, "training_job": job.pk}, follow=True
    )
    assert "Cannot start the benchmark" in answer.content.decode()
    assert "region-aware CLIP" in answer.content.decode()
    assert not BenchmarkJob.objects.exists()


def test_a_training_job_without_its_final_checkpoint_is_refused(probe_set, bench_dirs, tmp_path):
    job = stage1_job(tmp_path, kind=TrainingJob.Kind.SFT)
    with pytest.raises(BenchmarkError, match="no loadable checkpoint"):
        start_benchmark(probe_set=probe_set, training_job=job)
    TrainingJob.objects.filter(pk=job.pk).update(status="running")
    job.refresh_from_db()
    with pytest.raises(BenchmarkError, match="only a succeeded job"):
        start_benchmark(probe_set=probe_set, training_job=job)


def test_a_scorer_that_fails_leaves_the_job_failed_with_its_reason(
    probe_set, bench_dirs, tmp_path, django_capture_on_commit_callbacks
):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        job = start_benchmark(probe_set=probe_set, model_spec=str(folder))
    job.refresh_from_db()
    assert job.queue == "gpu" and job.status == "failed"
    assert job.error.startswith("exit code 2: ") and "config.json" in job.error
    assert not job.answers.exists()


def test_the_form_page_is_the_curators_and_prefills_the_training_job(probe_set, tmp_path):
    job = stage1_job(tmp_path, kind=TrainingJob.Kind.SFT)
    curator, annotator = Client(), Client()
    curator.force_login(make_user("cora", CURATOR))
    annotator.force_login(make_user("annie", ANNOTATOR))
    html = curator.get(f"/benchmarks/new/?training_job={job.pk}").content.decode()
    assert f'<option value="{job.pk}" selected>' in html
    assert f'<option value="{probe_set.pk}"' in html
    assert annotator.get("/benchmarks/new/").status_code == 403
    page = curator.get(f"/versions/jobs/{job.pk}/").content.decode()
    assert f"/benchmarks/new/?training_job={job.pk}" in page


def test_a_training_jobs_final_checkpoint_is_scored_on_the_gpu_queue(
    probe_set, bench_dirs, tmp_path, django_capture_on_commit_callbacks
):
    """The tiny random LLaVA stands for an SFT run's ``final/``: whatever it answers, the
    stored answers and the metrics agree, and the page lists exactly the ones it got wrong."""
    from training.probes.metrics import binary_metrics
    from training.stage2.tiny import build_tiny_llava

    job = stage1_job(tmp_path, kind=TrainingJob.Kind.SFT)
    build_tiny_llava(tmp_path / "stage2_sft" / "final")
    with django_capture_on_commit_callbacks(execute=True):
        bench = start_benchmark(
            probe_set=probe_set, training_job=job, batch_size=4, max_new_tokens=4
        )
    bench.refresh_from_db()
    assert bench.status == "done", (bench.error, bench.log_tail)
    assert bench.queue == "gpu" and bench.model_spec == job.checkpoint_dir
    assert bench.command[10:12] == ["--batch-size", "4"]
    answers = list(bench.answers.order_by("position"))
    assert [a.probe_id for a in answers] == [str(n) for n in range(8)]
    for parser in ("strict", "pope", "word"):
        readings = [getattr(a, parser) or None for a in answers]
        recomputed = binary_metrics([a.expected for a in answers], readings)
        stored = bench.metrics["splits"]["all"][parser]
        assert {k: stored[k] for k in recomputed} == pytest.approx(recomputed)
    browser = Client()
    browser.force_login(make_user("annie", ANNOTATOR))
    html = browser.get(f"/benchmarks/{bench.pk}/answers/?parser=pope").content.decode()
    assert wrong_objects(html) == {a.object for a in answers if not a.correct("pope")}


@pytest.mark.django_db(transaction=True)
def test_a_running_job_shows_its_progress_and_a_cancel_stops_the_scorer(probe_set, bench_dirs):
    """The scorer answers one probe a second; the page polls the progress it prints, and a
    cancel ends the process long before the eight probes are done."""
    import threading
    import time

    from django.db import connection

    from tests.workers.llm_server import LLMServer
    from webapp.benchmarks.runner import run_benchmark_job
    from webapp.benchmarks.services import cancel_benchmark

    browser = Client()
    browser.force_login(make_user("cora", CURATOR))
    with LLMServer(responder=lambda request: "yes", latency=1.0) as server:
        job = BenchmarkJob.objects.create(
            probe_set=probe_set, model_spec=f"{server.url}#slow", queue="llm", concurrency=1,
            progress_total=8, out_dir=str(bench_dirs / "slow"),
        )  # fmt: skip

        def work() -> None:
            try:
                run_benchmark_job(job_id=job.pk)
            finally:
                connection.close()  # the thread's own connection

        worker = threading.Thread(target=work)
        started = time.monotonic()
        worker.start()
        while job.progress_done < 1 and time.monotonic() - started < 30:
            time.sleep(0.2)
            job.refresh_from_db()
        assert job.status == "running" and 1 <= job.progress_done < 8
        fragment = browser.get(f"/benchmarks/{job.pk}/", headers={"HX-Request": "true"})
        html = fragment.content.decode()
        assert "<html" not in html and 'hx-trigger="every 2s"' in html
        assert re.search(r"\d of 8 probes", html)
        assert cancel_benchmark(job=job).status == "cancelling"
        worker.join(timeout=30)
    job.refresh_from_db()
    assert job.status == "cancelled" and server.total < 8
    assert time.monotonic() - started < 8
    # Done (here: cancelled), the poll asks the page to reload itself.
    done = browser.get(
        f"/benchmarks/{job.pk}/", headers={"HX-Request": "true", "HX-Target": "bench-progress"}
    )
    assert done.status_code == 204 and done["HX-Refresh"] == "true"


def test_a_spatial_probe_shows_the_subject_and_object_boxes(probe_set):
    job = BenchmarkJob.objects.create(probe_set=probe_set, model_spec="x", status="done")
    BenchmarkAnswer.objects.create(
        job=job, position=0, probe_id="0", split="spatial", object="tree", subject="dog",
        relation="left of", question="Is the dog to the left of the tree?", expected="yes",
        answer="No.", strict="no", pope="no", word="no", image_sha256="0" * 64, width=64,
        height=48, boxes=[[1, 2, 11, 12], [30, 5, 60, 45]],
    )  # fmt: skip
    browser = Client()
    browser.force_login(make_user("annie", ANNOTATOR))
    html = browser.get(f"/benchmarks/{job.pk}/answers/?split=spatial").content.decode()
    subject = html.index('class="box role-subject"')
    obj = html.index('class="box role-object"')
    assert subject < obj
    assert '<rect x="1" y="2" width="10" height="10">' in html[subject:obj]
    assert '<rect x="30" y="5" width="30" height="40">' in html[obj:]
    assert "<title>dog</title>" in html and "<title>tree</title>" in html
