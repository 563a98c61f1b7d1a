"""Region captioners: template words, a tiny local model, and an LLM behind a real HTTP server."""

from __future__ import annotations

import asyncio
import base64
import doctest
import io
import socket
import time

import pytest
from PIL import Image

from tests.workers.llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, LLMServer, images_in
from training import llm
from training.formats import position_words
from training.llm import estimate_cost
from workers import captioning
from workers.captioning import make_captioner, template_caption
from workers.captioning_llm import LLM_PROMPT_VERSION
from workers.region_captions import CaptionOutcome, RegionToCaption
from workers.tiny_models import build_tiny_blip

W, H = 300, 200


def image_bytes(width: int = W, height: int = H, fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (width, height), (30, 90, 160))
    image.paste((220, 40, 40), (20, 120, 80, 190))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def region(key: str, phrase: str, box=(20.0, 120.0, 80.0, 190.0), image=b"", **kw):
    return RegionToCaption(
        key=key,
        box=box,
        phrase=phrase,
        image_width=W,
        image_height=H,
        global_caption=kw.pop("global_caption", "a red box on a blue wall"),
        image=image_bytes() if image == b"" else image,
        **kw,
    )


def llm_captioner(server: LLMServer, **kw):
    options = {"timeout": 5.0, "concurrency": 8, "max_retries": 3, "backoff_base": 0.01}
    return make_captioner("llm", model="test-model", base_url=server.url, **(options | kw))


# --------------------------------------------------------------------------- words


def test_doctests_pass():
    assert doctest.testmod(captioning).failed == 0
    assert doctest.testmod(llm).failed == 0


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ((0, 0, 30, 20), "tiny in the upper left"),  # 1% of the image
        ((130, 0, 170, 20), "tiny at the top"),
        ((270, 0, 300, 20), "tiny in the upper right"),
        ((0, 70, 60, 130), "small on the left"),  # 6%
        ((120, 70, 180, 130), "small in the centre"),
        ((240, 70, 300, 130), "small on the right"),
        ((0, 100, 120, 200), "in the lower left"),  # 20%: no size word
        ((90, 100, 210, 200), "at the bottom"),
        ((180, 100, 300, 200), "in the lower right"),
        ((0, 0, 300, 200), "large in the centre"),
        # Edges: a centre on a third belongs to the next cell; area bounds belong above.
        ((80, 0, 120, 30), "small at the top"),  # exactly 2%, centre exactly at 1/3
        ((0, 0, 60, 20), "small in the upper left"),  # exactly 2%
        ((0, 0, 120, 50), "in the upper left"),  # exactly 10%
        ((0, 0, 240, 100), "large at the top"),  # exactly 40%
    ],
)
def test_position_words_follow_the_grid_and_size_rules(box, words):
    assert position_words(box, W, H) == words


@pytest.mark.parametrize(
    ("phrase", "box", "caption"),
    [
        ("dog", (0, 150, 40, 200), "a small dog in the lower left"),
        ("umbrella", (100, 60, 200, 140), "an umbrella in the centre"),
        ("red car", (0, 0, 300, 200), "a large red car in the centre"),
        ("the woman", (250, 0, 300, 30), "the small woman in the upper right"),
        ("people", (120, 160, 180, 200), "small people at the bottom"),
        ("  ", (0, 0, 10, 10), "a tiny object in the upper left"),
    ],
)
def test_template_captions_read_as_phrases(phrase, box, caption):
    assert template_caption(phrase, box, W, H) == caption


def test_the_template_captioner_needs_no_model_and_keeps_order():
    captioner = make_captioner("template")
    assert (captioner.strategy, captioner.model_id, captioner.prompt_version) == (
        "template",
        "",
        "template-v1",
    )
    regions = [
        region("r1", "dog", (0, 150, 40, 200), image=None),
        region("r2", "sky", (0, 0, 300, 60), image=None),
    ]
    assert captioner.caption(regions) == [
        CaptionOutcome("r1", "a small dog in the lower left"),
        CaptionOutcome("r2", "a sky at the top"),
    ]


def test_cost_is_estimated_only_when_prices_are_set():
    assert estimate_cost(2000, 500, prompt_price_per_1k=0.25, completion_price_per_1k=2.0) == 1.5
    assert estimate_cost(2000, 500, prompt_price_per_1k=None, completion_price_per_1k=2.0) is None


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown caption strategy"):
        make_captioner("oracle")


# --------------------------------------------------------------------------- local


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


def test_a_local_checkpoint_captions_each_region_in_order(tiny_blip_dir):
    captioner = make_captioner(
        "local", model=str(tiny_blip_dir), device="cpu", batch_size=2, max_new_tokens=8
    )
    assert (captioner.strategy, captioner.model_id) == ("local", str(tiny_blip_dir))
    assert captioner.prompt_version == "local-prefix-v1"  # BLIP has no chat template
    other = image_bytes(120, 90, "JPEG")
    regions = [
        region("a", "dog"),
        region("b", "red car", (0, 0, 100, 50)),
        region("c", "tree", (10, 10, 60, 60), image=other),
        region("d", "sky", image=None),
        region("e", "dog", (200, 0, 300, 100)),
    ]
    outcomes = captioner.caption(regions)
    assert [o.key for o in outcomes] == ["a", "b", "c", "d", "e"]
    for outcome, r in zip(outcomes, regions, strict=True):
        if r.image is None:
            assert outcome.caption is None
            assert "no image bytes" in (outcome.error or "")
        else:
            assert outcome.error is None
            assert outcome.caption and outcome.caption.startswith(r.phrase)
    # Loaded once per process; batching does not change greedy output.
    again = make_captioner(
        "local", model=str(tiny_blip_dir), device="cpu", batch_size=1, max_new_tokens=8
    )
    assert again.model is captioner.model
    assert again.caption(regions) == outcomes


# --------------------------------------------------------------------------- llm


def test_the_llm_captioner_sends_caption_phrase_box_and_crop():
    with LLMServer() as server:
        captioner = llm_captioner(server)
        assert captioner.strategy == "llm" and captioner.model_id == "test-model"
        assert captioner.prompt_version == LLM_PROMPT_VERSION
        assert "{phrase}" in captioner.prompt_text and "{global_caption}" in captioner.prompt_text
        (outcome,) = captioner.caption([region("k1", "red box")])
        request = server.last_request[""]
    assert outcome == CaptionOutcome(
        "k1", "a region showing the red box", None, PROMPT_TOKENS, COMPLETION_TOKENS
    )
    assert request["model"] == "test-model"
    assert request["response_format"] == {"type": "json_object"}
    text = request["messages"][1]["content"][0]["text"]
    assert "a red box on a blue wall" in text
    assert "Phrase: red box" in text
    assert "[20, 120, 80, 190]" in text and "300x200" in text
    assert "in the lower left" in text
    (url,) = images_in(request)
    assert url.startswith("data:image/jpeg;base64,")
    crop = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert crop.size == (78, 91)  # the 60x70 box and 15% context each side, clipped


def test_transient_failures_are_retried_until_they_succeed():
    script = {
        "limited dog": ["429", "429", "ok"],
        "flaky cat": ["500", "ok"],
        "busy bird": ["503"],
        "slow cow": ["slow", "ok"],
    }
    with LLMServer(script, slow_s=1.5) as server:
        captioner = llm_captioner(server, timeout=0.5)
        outcomes = captioner.caption([region(p, p) for p in [*script, "calm fish"]])
        counts = dict(server.counts)
    assert [o.caption for o in outcomes] == [
        f"a region showing the {p}" for p in [*script, "calm fish"]
    ]
    assert counts == {"limited dog": 3, "flaky cat": 2, "busy bird": 2, "slow cow": 2, "": 1}
    # Only answered requests report usage; errors and the timed-out request cost nothing.
    assert all(o.prompt_tokens == PROMPT_TOKENS for o in outcomes)
    assert sum(o.completion_tokens for o in outcomes) == 5 * COMPLETION_TOKENS


def test_retry_after_is_respected():
    with LLMServer({"patient horse": ["429-wait:0.4", "ok"]}) as server:
        captioner = llm_captioner(server, backoff_base=0.001)
        start = time.monotonic()
        (outcome,) = captioner.caption([region("h", "patient horse")])
        elapsed = time.monotonic() - start
    assert outcome.caption == "a region showing the patient horse"
    assert elapsed >= 0.4


def test_permanent_failures_are_recorded_and_the_run_goes_on():
    script = {
        "mangled": ["malformed", "malformed"],
        "garbled once": ["malformed", "ok"],
        "refused": ["refusal"],
        "filtered": ["refusal-field"],
        "bad request": ["400"],
        "broken": ["500"] * 10,
    }
    keys = ["fine 1", "mangled", "garbled once", "refused", "filtered", "bad request", "broken"]
    with LLMServer(script) as server:
        captioner = llm_captioner(server, max_retries=2)
        outcomes = captioner.caption([region(k, k) for k in [*keys, "fine 2"]])
        counts = dict(server.counts)
    by_key = {o.key: o for o in outcomes}
    assert [o.key for o in outcomes] == [*keys, "fine 2"]
    assert by_key["fine 1"].caption == "a region showing the fine 1"
    assert by_key["fine 2"].caption == "a region showing the fine 2"
    assert by_key["garbled once"].caption == "a region showing the garbled once"
    assert by_key["garbled once"].prompt_tokens == 2 * PROMPT_TOKENS  # both answers billed
    garbled = by_key["mangled"]
    assert garbled.caption is None and garbled.error.startswith("malformed JSON")
    assert garbled.prompt_tokens == 2 * PROMPT_TOKENS and not garbled.retryable
    assert by_key["refused"].error == "refused: I'm sorry, I can't help with that."
    assert by_key["filtered"].error == "refused: I'm sorry, I can't help with that."
    assert by_key["bad request"].error.startswith("HTTP 400")
    assert not by_key["bad request"].retryable
    assert by_key["broken"].error.startswith("gave up after 3 attempts: HTTP 500")
    assert by_key["broken"].retryable
    assert counts["mangled"] == 2 and counts["garbled once"] == 2
    assert counts["refused"] == counts["filtered"] == counts["bad request"] == 1
    assert counts["broken"] == 3  # max_retries=2


def test_concurrency_is_bounded_and_order_is_kept():
    script = {f"item {i:02d}": [f"sleep:{0.01 * (i % 5)}"] for i in range(40)}
    with LLMServer(script) as server:
        captioner = llm_captioner(server, concurrency=6)
        outcomes = captioner.caption([region(k, k) for k in script])
        peak = server.max_in_flight
    assert [o.key for o in outcomes] == list(script)
    assert [o.caption for o in outcomes] == [f"a region showing the {k}" for k in script]
    assert 2 <= peak <= 6


def test_an_unreachable_endpoint_fails_every_item_as_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    captioner = make_captioner(
        "llm",
        model="m",
        base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=1,
        backoff_base=0.01,
        timeout=2.0,
    )
    outcomes = captioner.caption([region("a", "dog"), region("b", "cat")])
    assert [o.key for o in outcomes] == ["a", "b"]
    for outcome in outcomes:
        assert outcome.caption is None and outcome.retryable
        assert outcome.error.startswith("gave up after 2 attempts: connection error")


def test_caption_works_when_called_inside_a_running_event_loop():
    async def from_async_code(captioner):
        return captioner.caption([region("a", "dog")])

    with LLMServer() as server:
        outcomes = asyncio.run(from_async_code(llm_captioner(server)))
    assert outcomes[0].caption == "a region showing the dog"
