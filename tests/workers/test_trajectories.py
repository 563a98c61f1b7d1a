"""The trajectory generator (workers/trajectories.py) against a real OpenAI-compatible server
on loopback that plays M and the RM (tests/workers/trajectory_players.py), and a tiny random
local LLaVA loaded through ``from_pretrained``. No Django here."""

from __future__ import annotations

import asyncio
import doctest
import io

import pytest
from PIL import Image

from tests.workers import trajectory_players as players
from tests.workers.llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, LLMServer, images_in
from training.formats import STOP_PHRASE
from training.llm import RetryPolicy
from training.stage2.generators import EndpointGenerator, make_generator
from training.stage2.prompts import prompt_versions
from workers import trajectories
from workers.trajectories import (
    TrajectoryItem,
    generate_batch,
    latency_means,
    latency_totals,
    run_batch,
)

REGIONS = (
    {"phrase": "red car", "box": [10, 60, 70, 110], "caption": "a blue car parked"},
    {"phrase": "dog", "box": [120, 70, 150, 100], "caption": "a small brown dog"},
)
FAST_RETRY = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)


def endpoint(server: LLMServer, model: str, **options) -> EndpointGenerator:
    options = {"timeout": 5.0, "retry": FAST_RETRY} | options
    return make_generator(f"{server.url}#{model}", **options)  # type: ignore[return-value]


def item(key: str = "1", question: str = "What colour is the car on the left?", **kw):
    return TrajectoryItem(key=key, question=question, regions=REGIONS, **kw)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (20, 40, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def generate(server: LLMServer, items, *, k: int = 3, concurrency: int = 4, **rm_options):
    return run_batch(
        items,
        m=endpoint(server, "mllm"),
        rm=endpoint(server, "rm", **rm_options),
        k=k,
        concurrency=concurrency,
    )


def test_doctests_pass():
    assert doctest.testmod(trajectories).failed == 0


# --- The loop through the endpoint ------------------------------------------------------------


def test_an_rm_that_accepts_after_one_revision_gives_a_two_step_trajectory():
    with LLMServer(responder=players.play) as server:
        [outcome] = generate(server, [item()])

    assert outcome.error is None
    result = outcome.rectification
    assert result.outcome == "accepted"
    assert [s.response for s in result.steps] == [players.FIRST_ANSWER, players.REVISED_ANSWER]
    assert [s.feedback for s in result.steps] == [players.FEEDBACK, STOP_PHRASE]
    assert [s.written_by for s in result.steps] == ["mllm", "mllm"]
    assert (result.model, result.rm, result.prompt_versions) == ("mllm", "rm", prompt_versions())
    assert all(s.m_latency_s > 0 and s.rm_latency_s > 0 for s in result.steps)
    # The RM saw the answer and the evidence: every region with its box and caption, then the
    # FORMATS.md relation of the pair.
    critique = players.prompt_of(server.last_request[""])
    assert "red car [10, 60, 70, 110]: a blue car parked" in critique
    assert "dog [120, 70, 150, 100]: a small brown dog" in critique
    assert "red car left of dog" in critique
    assert server.total == 4  # A_0, F_0, A_1, F_1
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (
        4 * PROMPT_TOKENS,
        4 * COMPLETION_TOKENS,
    )


def test_an_rm_that_never_accepts_stops_the_loop_at_k():
    with LLMServer(responder=players.play) as server:
        [outcome] = generate(server, [item(question="NEVER-ACCEPT: what colour?")], k=2)

    result = outcome.rectification
    assert result.outcome == "max_steps"
    assert [s.k for s in result.steps] == [0, 1, 2]
    assert all(s.feedback == players.FEEDBACK for s in result.steps)  # A_K is critiqued too
    assert server.total == 6  # 3 answers by M, 3 critiques


@pytest.mark.parametrize("action", ["refusal-field", "malformed-empty"])
def test_malformed_output_is_recorded_on_its_item_and_the_others_go_on(action):
    def responder(request):
        if "BROKEN" in players.prompt_of(request) and not players.is_critique(request):
            return ""  # an empty answer: nothing to critique
        return players.play(request)

    script = {"BROKEN": ["refusal-field"]} if action == "refusal-field" else {}
    with LLMServer(script=script, responder=responder) as server:
        broken, fine = generate(server, [item("1", "BROKEN question"), item("2")])

    assert broken.rectification is None
    assert broken.error == "mllm: the endpoint answered no text"
    assert fine.error is None and fine.rectification.outcome == "accepted"


def test_500s_are_retried_and_a_call_that_keeps_failing_is_recorded():
    script = {"FLAKY": ["500", "503"], "DOWN": ["500"] * 10}
    with LLMServer(script=script, responder=players.play) as server:
        flaky, down = generate(server, [item("1", "FLAKY?"), item("2", "DOWN?")])
        counts = dict(server.counts)

    assert flaky.error is None and flaky.rectification.outcome == "accepted"
    assert down.rectification is None
    assert down.error.startswith("mllm: HTTP 500") and "after 3 attempt(s)" in down.error
    assert counts["DOWN"] == 3  # the first try and FAST_RETRY's two retries


def test_timeouts_are_retried_then_recorded():
    with LLMServer(script={"SLOW": ["slow"] * 5}, slow_s=1.0, responder=players.play) as server:
        [outcome] = run_batch(
            [item("1", "SLOW?")],
            m=endpoint(server, "mllm", timeout=0.3),
            rm=endpoint(server, "rm"),
            k=1,
        )
        assert server.counts["SLOW"] == 3

    assert outcome.rectification is None
    assert outcome.error == "mllm: timeout after 3 attempt(s)"


class Counting:
    """A generator that counts calls in flight, shared with others through ``flight``
    (client side: the server's own count can overlap one item's finished request with its
    next one)."""

    def __init__(self, inner, flight: dict) -> None:
        self.inner, self.name, self.vision, self.flight = inner, inner.name, inner.vision, flight

    async def generate(self, prompt, **kw):
        self.flight["now"] += 1
        self.flight["max"] = max(self.flight["max"], self.flight["now"])
        try:
            return await self.inner.generate(prompt, **kw)
        finally:
            self.flight["now"] -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_items_run_concurrently_up_to_the_bound():
    flight = {"now": 0, "max": 0}
    with LLMServer(responder=players.play, latency=0.05) as server:
        m = Counting(endpoint(server, "mllm"), flight)
        rm = Counting(endpoint(server, "rm"), flight)

        async def go():
            try:
                items = [item(str(n)) for n in range(12)]
                return await generate_batch(items, m=m, rm=rm, k=2, concurrency=4)
            finally:
                await m.aclose()
                await rm.aclose()

        outcomes = asyncio.run(go())

    assert [o.key for o in outcomes] == [str(n) for n in range(12)]
    assert all(o.rectification.outcome == "accepted" for o in outcomes)
    # Four items at once, each waiting on M or on the RM: four calls at once, never more.
    assert flight["max"] == 4


def test_only_a_vision_rm_gets_the_image():
    image = png()
    with LLMServer(responder=players.play) as server:
        run_batch(
            [item(image=image)],
            m=endpoint(server, "mllm", vision=True),
            rm=endpoint(server, "rm", vision=False),
            k=0,
        )
        text_rm = server.last_request[""]
        run_batch(
            [item(image=image)],
            m=endpoint(server, "mllm", vision=True),
            rm=endpoint(server, "rm", vision=True),
            k=0,
        )
        vision_rm = server.last_request[""]

    assert players.is_critique(text_rm) and images_in(text_rm) == []
    assert players.is_critique(vision_rm) and len(images_in(vision_rm)) == 1
    assert images_in(vision_rm)[0].startswith("data:image/png;base64,")


def test_a_batch_can_run_twice_in_one_process_with_the_same_generators():
    # Each batch has its own event loop; the endpoint client is closed and made again.
    with LLMServer(responder=players.play) as server:
        m, rm = endpoint(server, "mllm"), endpoint(server, "rm")
        first = run_batch([item()], m=m, rm=rm, k=1)
        second = run_batch([item()], m=m, rm=rm, k=1)
    assert first[0].rectification.final == second[0].rectification.final


def test_generate_batch_refuses_a_concurrency_below_one():
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(generate_batch([], m=None, rm=None, k=1, concurrency=0))  # type: ignore[arg-type]


def test_the_latency_summary_reproduces_table_4_rows():
    with LLMServer(responder=players.play, latency=0.02) as server:
        outcomes = generate(server, [item("1"), item("2", "NEVER-ACCEPT?")], k=2)
    totals = latency_totals([o.rectification for o in outcomes])
    means = latency_means(totals)

    assert (totals["trajectories"], totals["steps"], totals["m_calls"]) == (2, 5, 5)
    assert means["mean_steps"] == 2.5
    assert means["mean_m_ms"] >= 20 and means["mean_rm_ms"] >= 20
    assert set(means["query_ms_by_revisions"]) == {"1", "2"}
    # One revision: two M calls and two RM calls, each at least the server's 20 ms.
    assert means["query_ms_by_revisions"]["1"]["mean_ms"] >= 80


# --- Local models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_stage2(tmp_path_factory):
    from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm

    root = tmp_path_factory.mktemp("tiny-stage2")
    return build_tiny_llava(root / "llava"), build_tiny_text_lm(root / "rm")


def test_a_tiny_local_llava_as_m_with_an_endpoint_rm_runs_end_to_end(tiny_stage2):
    llava, _ = tiny_stage2
    m = make_generator(str(llava), device="cpu", max_new_tokens=8)
    assert m.vision is True
    with LLMServer(responder=players.play) as server:
        [outcome] = run_batch(
            [item(question="NEVER-ACCEPT: what is left of the dog?", image=png())],
            m=m,
            rm=endpoint(server, "rm"),
            k=1,
        )
        assert server.total == 2  # the RM critiqued A_0 and A_1; M ran locally

    result = outcome.rectification
    assert outcome.error is None and result.outcome == "max_steps"
    assert [s.written_by for s in result.steps] == [str(llava), str(llava)]
    assert all(s.m_latency_s > 0 and s.rm_latency_s > 0 for s in result.steps)


def test_both_local_a_tiny_llava_and_a_tiny_text_rm(tiny_stage2):
    llava, rm_folder = tiny_stage2
    m = make_generator(str(llava), device="cpu", max_new_tokens=6)
    rm = make_generator(str(rm_folder), device="cpu", max_new_tokens=6)
    assert rm.vision is False
    [outcome] = run_batch([item(image=png())], m=m, rm=rm, k=1)

    assert outcome.error is None
    result = outcome.rectification
    assert result.model == str(llava) and result.rm == str(rm_folder)
    assert 1 <= len(result.steps) <= 2
    assert result.steps[0].rm_latency_s > 0
