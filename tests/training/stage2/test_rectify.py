"""The rectification loop and ``python -m training rectify``, against a loopback
OpenAI-compatible server playing M and the RM, and with the tiny local models."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.workers.llm_server import LLMServer, images_in
from training.formats import STOP_PHRASE
from training.stage2.generators import EndpointGenerator, close_all, make_generator
from training.stage2.loop import rectify
from training.stage2.prompts import CRITIQUE_INSTRUCTIONS
from training.stage2.rectify import main


def png(colour: tuple[int, int, int] = (30, 60, 220)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(out, format="PNG")
    return out.getvalue()


def text_of(request: Mapping[str, Any]) -> str:
    content = request["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part["type"] == "text")


def honest_pair(request: Mapping[str, Any]) -> str:
    """M says red, learns blue from feedback; the RM accepts exactly the answers with 'blue'."""
    text = text_of(request)
    if text.startswith(CRITIQUE_INSTRUCTIONS):
        answer = text.split("Answer: ", 1)[1].split("\n", 1)[0]
        return STOP_PHRASE if "blue" in answer else "The car is blue, not red."
    return "It is blue." if "Feedback:" in text else "It is red."


def never_satisfied(request: Mapping[str, Any]) -> str:
    if text_of(request).startswith(CRITIQUE_INSTRUCTIONS):
        return "Still wrong."
    return "Another try."


def endpoint(server: LLMServer, model: str, vision: bool) -> EndpointGenerator:
    return EndpointGenerator(base_url=server.url, model=model, vision=vision)


def run_loop(m: Any, rm: Any, **kwargs: Any) -> Any:
    """One rectification on a fresh event loop, closing the generators' clients after it."""

    async def go() -> Any:
        try:
            return await rectify(m=m, rm=rm, **kwargs)
        finally:
            await close_all(m, rm)

    return asyncio.run(go())


def test_the_loop_stops_on_the_stop_phrase_and_records_latencies() -> None:
    with LLMServer(responder=honest_pair, latency=0.02) as server:
        m, rm = endpoint(server, "m", True), endpoint(server, "rm", False)
        result = run_loop(m, rm, question="What colour is the car?", k=3, image=png())
        assert server.total == 4  # A_0, F_0, A_1, F_1
    assert result.outcome == "accepted" and result.revisions == 1
    assert [s.response for s in result.steps] == ["It is red.", "It is blue."]
    assert [s.feedback for s in result.steps] == ["The car is blue, not red.", STOP_PHRASE]
    for step in result.steps:
        assert step.m_latency_s >= 0.02 and step.rm_latency_s >= 0.02
        assert step.written_by == "m"


def test_the_loop_stops_at_k_revisions() -> None:
    with LLMServer(responder=never_satisfied) as server:
        m, rm = endpoint(server, "m", True), endpoint(server, "rm", False)
        result = run_loop(m, rm, question="Q?", k=2, image=png())
    assert result.outcome == "max_steps" and result.revisions == 2
    assert [s.k for s in result.steps] == [0, 1, 2]
    assert all(s.feedback == "Still wrong." for s in result.steps)  # the RM checked A_K too


def test_the_image_goes_to_m_and_only_to_a_vision_rm() -> None:
    with LLMServer(responder=honest_pair) as server:
        m, rm = endpoint(server, "m", True), endpoint(server, "rm", False)
        run_loop(m, rm, question="What colour?", k=1, image=png())
        critique = server.last_request[""]  # the last request was the RM's
        assert text_of(critique).startswith(CRITIQUE_INSTRUCTIONS)
        assert images_in(critique) == []
        rm_vision = endpoint(server, "rm", True)
        run_loop(m, rm_vision, question="What colour?", k=1, image=png())
        assert len(images_in(server.last_request[""])) == 1


def test_the_tiny_local_llava_plays_m(tiny_llava_dir: Path) -> None:
    m = make_generator(str(tiny_llava_dir), max_new_tokens=5)
    with LLMServer(responder=never_satisfied) as server:
        rm = endpoint(server, "rm", False)
        result = run_loop(m, rm, question="Where is it?", k=2, image=png())
    assert result.outcome == "max_steps" and len(result.steps) == 3
    assert all(s.written_by == str(tiny_llava_dir) for s in result.steps)
    assert all(s.m_latency_s > 0 and s.rm_latency_s > 0 for s in result.steps)

    def accept(request: Mapping[str, Any]) -> str:
        return STOP_PHRASE

    with LLMServer(responder=accept) as server:
        result = run_loop(m, endpoint(server, "rm", False), question="Where?", k=2, image=png())
    assert result.outcome == "accepted" and result.revisions == 0


@pytest.fixture
def items(tmp_path: Path, stage2_version_dir: Path) -> Path:
    """Five items: an image_path, a file:// uri, a sha256 in the version, a missing image, a
    line that is not JSON."""
    image = tmp_path / "car.png"
    image.write_bytes(png())
    sha = next(iter((stage2_version_dir / "images").rglob("*.png"))).stem
    rows = [
        json.dumps({"id": "p", "question": "What colour is the car?", "image_path": "car.png"}),
        json.dumps(
            {
                "id": "u",
                "question": "Colour?",
                "uri": image.resolve().as_uri(),
                "evidence": "car [0, 0, 40, 40]: a blue car",
            }
        ),
        json.dumps({"id": "s", "question": "Which shape?", "image": sha}),
        json.dumps({"id": "gone", "question": "Q?", "image_path": "nowhere.png"}),
        "{not json",
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_cli_runs_endpoints_in_input_order(
    items: Path, stage2_version_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.jsonl"
    with LLMServer(responder=honest_pair, latency=0.01) as server:
        code = main(
            [
                "--model",
                f"{server.url}#llava-m",
                "--rm",
                f"{server.url}#rm-3b",
                "--k",
                "3",
                "--data",
                str(items),
                "--out",
                str(out),
                "--version",
                str(stage2_version_dir),
                "--concurrency",
                "3",
            ]
        )
        assert server.max_in_flight >= 2  # items really ran concurrently
    assert code == 0
    rows = read(out)
    assert [r["id"] for r in rows] == ["p", "u", "s", "gone", "line-5"]
    for row in rows[:3]:
        assert set(row) == {
            "id",
            "question",
            "final",
            "outcome",
            "revisions",
            "steps",
            "model",
            "rm",
            "prompt_versions",
        }
        assert row["outcome"] == "accepted" and row["final"] == "It is blue."
        assert row["model"] == "llava-m" and row["rm"] == "rm-3b"
        assert set(row["steps"][0]) == {
            "k",
            "response",
            "feedback",
            "m_latency_s",
            "rm_latency_s",
            "written_by",
        }
    assert "nowhere.png" in rows[3]["error"] and "not JSON" in rows[4]["error"]
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["items"] == 5 and summary["accepted"] == 3 and summary["failed"] == 2
    assert summary["mean_revisions"] == 1.0 and summary["mean_m_ms"] >= 10
    assert "[5/5]" in captured.err


def test_the_cli_runs_local_m_and_rm(
    items: Path,
    tiny_llava_dir: Path,
    tiny_rm_dir: Path,
    stage2_version_dir: Path,
    tmp_path: Path,
    capsys,
) -> None:
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "--model",
            str(tiny_llava_dir),
            "--rm",
            str(tiny_rm_dir),
            "--k",
            "1",
            "--data",
            str(items),
            "--out",
            str(out),
            "--version",
            str(stage2_version_dir),
            "--max-new-tokens",
            "4",
            "--concurrency",
            "3",
            "--local-batch",
            "3",
        ]
    )
    assert code == 0
    rows = read(out)
    assert [r["id"] for r in rows] == ["p", "u", "s", "gone", "line-5"]
    for row in rows[:3]:
        assert row["outcome"] in ("accepted", "max_steps")
        assert 1 <= len(row["steps"]) <= 2 and row["model"] == str(tiny_llava_dir)
        assert all(s["m_latency_s"] > 0 and s["rm_latency_s"] > 0 for s in row["steps"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["mean_m_ms"] > 0 and summary["mean_rm_ms"] > 0


def test_a_sha_without_version_is_an_item_error(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text(
        json.dumps({"id": 1, "question": "Q?", "image": hashlib.sha256(b"x").hexdigest()}) + "\n"
    )
    with LLMServer(responder=honest_pair) as server:
        assert (
            main(
                [
                    "--model",
                    f"{server.url}#m",
                    "--rm",
                    f"{server.url}#rm",
                    "--k",
                    "1",
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / "o.jsonl"),
                ]
            )
            == 0
        )
    [row] = read(tmp_path / "o.jsonl")
    assert row["id"] == 1 and "--version" in row["error"]


def test_a_failing_endpoint_fails_the_item_not_the_run(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "question": q}) + "\n"
            for i, q in enumerate(["broken question", "fine question"])
        )
    )
    with LLMServer(script={"broken": ["400"]}, responder=honest_pair) as server:
        assert (
            main(
                [
                    "--model",
                    f"{server.url}#m",
                    "--rm",
                    f"{server.url}#rm",
                    "--k",
                    "1",
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / "o.jsonl"),
                ]
            )
            == 0
        )
    rows = read(tmp_path / "o.jsonl")
    assert "GenerationError" in rows[0]["error"] and rows[1]["outcome"] == "accepted"
