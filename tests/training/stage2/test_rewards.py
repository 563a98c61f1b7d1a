"""The Stage-2 RL rewards: doctests, and the RM reward against a real loopback endpoint and
against the tiny local RM."""

from __future__ import annotations

import asyncio
import doctest
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.workers.llm_server import LLMServer, images_in
from training.formats import STOP_PHRASE
from training.llm import RetryPolicy
from training.stage2 import config, rewards, rl_metrics
from training.stage2.generation import GenerationError
from training.stage2.generators import EndpointGenerator
from training.stage2.prompts import critique_prompt
from training.stage2.rewards import RMReward, rm_verdict_reward


def parity_rm(request: Mapping[str, Any]) -> str:
    """A deterministic RM: accepts an answer of even length, corrects one of odd length."""
    text = request["messages"][-1]["content"]
    if isinstance(text, list):
        text = "".join(part.get("text", "") for part in text if part.get("type") == "text")
    answer = re.search(r"^Answer: (.*)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return STOP_PHRASE if len(answer) % 2 == 0 else "The position is wrong."


def endpoint(server: LLMServer, **options: Any) -> EndpointGenerator:
    return EndpointGenerator(
        base_url=server.url, model="tiny-rm", retry=RetryPolicy(max_retries=0), **options
    )


def call(reward: RMReward, completions: list[Any], **columns: Any) -> list[float | None]:
    return asyncio.run(reward(["prompt"] * len(completions), completions, **columns))


@pytest.mark.parametrize(
    ("module", "examples"),
    [(rewards, 19), (rl_metrics, 1), (config, 1)],
    ids=lambda m: getattr(m, "__name__", m),
)
def test_the_doctest_examples_hold(module: Any, examples: int) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= examples
    assert result.failed == 0


def test_the_rm_reward_judges_each_completion_and_sends_the_group_at_once() -> None:
    answers = ["ab", "abc", "abcd", "a", "The cup.", "The cups", "xy", "xyz"]
    logged: dict[str, Any] = {}
    sent: list[str] = []

    def recording_rm(request: Mapping[str, Any]) -> str:
        sent.append(request["messages"][-1]["content"])
        return parity_rm(request)

    with LLMServer(responder=recording_rm, latency=0.3) as server:
        reward = RMReward(endpoint(server), accept=1.0, reject=-0.5)
        got = call(
            reward,
            [[{"role": "assistant", "content": a}] for a in answers],
            question=["Where is the cup?"] * len(answers),
            evidence=["cup [0, 0, 10, 10]: a red cup"] * len(answers),
            log_metric=lambda name, value: logged.__setitem__(name, value),
        )
    assert got == [1.0 if len(a) % 2 == 0 else -0.5 for a in answers]
    # the RM sees exactly the critique prompt of (Q, A_{k+1}, evidence), as in the loop
    assert sorted(sent) == sorted(
        critique_prompt("Where is the cup?", a, "cup [0, 0, 10, 10]: a red cup") for a in answers
    )
    assert server.max_in_flight == len(answers)  # one batch, not eight round trips
    assert logged == {"rm/accept_rate": 5 / 8, "rm/failures": 0.0, "rm/unusable": 0.0}
    assert reward.last_feedback[0] == STOP_PHRASE


def test_a_vision_rm_gets_the_image_and_a_text_rm_does_not(tmp_path: Path) -> None:
    image = tmp_path / "cup.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(image)
    with LLMServer(responder=parity_rm) as server:
        for vision in (True, False):
            call(
                RMReward(endpoint(server, vision=vision)),
                ["ab"],
                question=["Q?"],
                image_path=[str(image)],
            )
            urls = images_in(server.last_request[""])
            if vision:
                assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")
            else:
                assert urls == []


def test_a_failing_rm_stops_training_or_is_skipped_as_configured() -> None:
    columns = {"question": ["Q?", "Q?"]}
    with LLMServer(responder=parity_rm, script={"BROKEN": ["400", "400"]}) as server:
        with pytest.raises(GenerationError, match="tiny-rm"):
            call(RMReward(endpoint(server)), ["ab", "BROKEN answer"], **columns)
        logged: dict[str, float] = {}
        got = call(
            RMReward(endpoint(server), on_error="skip"),
            ["ab", "BROKEN answer"],
            log_metric=lambda n, v: logged.__setitem__(n, v),
            **columns,
        )
    assert got == [1.0, None]  # TRL leaves a None term out of the weighted sum
    assert logged["rm/failures"] == 1.0


def test_the_rm_reward_names_a_missing_dataset_column() -> None:
    with LLMServer(responder=parity_rm) as server, pytest.raises(KeyError, match="question"):
        call(RMReward(endpoint(server)), ["ab"])


def test_the_rm_reward_works_with_the_tiny_local_rm(tiny_rm_dir: Path) -> None:
    from training.stage2.local import LocalGenerator

    rm = LocalGenerator.from_pretrained(str(tiny_rm_dir), device="cpu", max_new_tokens=6)
    answers = ["The red circle is left of the cup.", "A blue square at [8, 16, 40, 56]."]
    evidence = "circle [0, 0, 8, 8]: a red circle"
    reward = RMReward(rm, max_new_tokens=6)
    got = call(reward, answers, question=["Where is it?"] * 2, evidence=[evidence] * 2)
    # what the same model answers to the critique prompt, called directly
    direct = [
        rm.generate_sync(critique_prompt("Where is it?", a, evidence), max_new_tokens=6).text
        for a in answers
    ]
    assert reward.last_feedback == direct
    assert got == [rm_verdict_reward(text) for text in direct]


def test_an_empty_critique_from_the_tiny_local_rm_is_a_logged_counted_rejection(
    tiny_rm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.stage2.local import LocalGenerator

    rm = LocalGenerator.from_pretrained(str(tiny_rm_dir), device="cpu", max_new_tokens=6)
    eos = rm.tokenizer.eos_token_id

    def always_eos(module: Any, inputs: Any, logits: Any) -> Any:
        logits = logits.clone()
        logits[..., eos] = logits.max() + 100.0  # greedy decoding stops at once
        return logits

    rm.model.lm_head.register_forward_hook(always_eos)
    assert rm.generate_sync("Question: Q?", max_new_tokens=6).text == ""
    logged: dict[str, float] = {}
    extra: dict[str, list[str]] = {}
    reward = RMReward(rm, accept=1.0, reject=-0.5, max_new_tokens=6)

    with caplog.at_level("WARNING", logger="training.stage2.rewards"):
        got = call(
            reward,
            ["The red circle is left of the cup.", "A blue square."],
            question=["Where is it?"] * 2,
            log_metric=lambda n, v: logged.__setitem__(n, v),
            log_extra=lambda n, v: extra.__setitem__(n, v),
        )

    assert reward.last_feedback == ["", ""]
    assert got == [-0.5, -0.5]  # before: +1.0 each, an empty critique read as "no corrections"
    assert logged == {"rm/accept_rate": 0.0, "rm/failures": 0.0, "rm/unusable": 2.0}
    assert extra["rm_feedback"] == ["(unusable: '')", "(unusable: '')"]
    assert "2 unusable critique(s) of 2" in caplog.text


def test_an_endpoint_critique_without_words_is_a_rejection_too() -> None:
    with LLMServer(responder=lambda request: " ... ") as server:
        logged: dict[str, float] = {}
        got = call(
            RMReward(endpoint(server)),
            ["ab"],
            question=["Q?"],
            log_metric=lambda n, v: logged.__setitem__(n, v),
        )
    assert got == [-1.0]
    assert logged["rm/unusable"] == 1.0 and logged["rm/accept_rate"] == 0.0


def test_unusable_critiques_reach_metrics_jsonl() -> None:
    line = rl_metrics.metrics_line({"loss": 0.1, "rm/unusable": 3.0, "rm/failures": 1.0}, 2, 1.0)
    assert (line["rm_unusable"], line["rm_failures"]) == (3.0, 1.0)
