"""``python -m training bench`` against an OpenAI-compatible server on loopback that answers
scripted text: the metrics equal hand-computed ones for each parser."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.training.probes.probe_factory import png, write_probe_set
from tests.workers.llm_server import LLMServer, images_in
from training.__main__ import main as training_main
from training.probes.scorer import PROMPT_SUFFIX

# (object, gold, split, what the server answers); the metrics below are counted from this by
# hand. Objects are unique so the server can tell the questions apart.
SCRIPT = [
    ("dog", "yes", "random", "Yes."),
    ("cat", "yes", "random", "no"),
    ("bird", "no", "random", "no"),
    ("horse", "no", "random", "Yes."),
    ("sheep", "yes", "random", "There is not a dog."),
    ("cow", "no", "popular", "There is not a dog."),
    ("bear", "yes", "popular", "zxq ### garbage"),
    ("zebra", "no", "popular", "Yes, there is. No wait."),
    ("giraffe", "yes", "popular", "I think no, but yes."),
    ("apple", "no", "popular", "%%%"),
]
ANSWERS = {obj: text for obj, _, _, text in SCRIPT}

# strict: yes no no yes - - - - - -   correct 1,3        TP 1 FP 1, gold yes 5
# pope:   yes no no yes no no yes yes no yes   correct 1,3,6,7   TP 2 FP 3
# word:   yes no no yes - - - yes no -         correct 1,3        TP 1 FP 2
EXPECTED_ALL = {
    "strict": {"accuracy": 0.2, "precision": 0.5, "recall": 0.2, "f1": 2 / 7,
               "yes_ratio": 0.5, "unparsed": 6, "n": 10},
    "pope": {"accuracy": 0.4, "precision": 0.4, "recall": 0.4, "f1": 0.4,
             "yes_ratio": 0.5, "unparsed": 0, "n": 10},
    "word": {"accuracy": 0.2, "precision": 1 / 3, "recall": 0.2, "f1": 0.25,
             "yes_ratio": 0.5, "unparsed": 4, "n": 10},
}  # fmt: skip
# Split "random" is probes 1-5, "popular" 6-10.
EXPECTED_SPLITS = {
    ("random", "strict"): {"accuracy": 0.4, "recall": 1 / 3, "unparsed": 1},
    ("random", "pope"): {"accuracy": 0.4, "precision": 0.5, "recall": 1 / 3},
    ("popular", "pope"): {"accuracy": 0.4, "precision": 1 / 3, "recall": 0.5, "f1": 0.4},
    ("popular", "word"): {"accuracy": 0.0, "precision": 0.0, "unparsed": 3, "yes_ratio": 0.5},
}


def answer_for(request: Mapping[str, Any]) -> str:
    text = request["messages"][-1]["content"][-1]["text"]
    return next(answer for obj, answer in ANSWERS.items() if f" {obj} " in text)


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    write_probe_set(tmp_path / "probes", [(o, g, s) for o, g, s, _ in SCRIPT], images=3)
    return tmp_path / "probes"


def bench(*args: str) -> int:
    return training_main(["bench", *args])


def read_predictions(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "predictions.jsonl").open(encoding="utf-8")]


def test_metrics_equal_the_hand_computed_ones_for_each_parser(probe_dir, tmp_path, capsys):
    run = tmp_path / "run"
    with LLMServer(responder=answer_for) as server:
        code = bench("--model", f"{server.url}#llava-test", "--probes", str(probe_dir),
                     "--out", str(run), "--concurrency", "4", "--progress-every", "5")  # fmt: skip
        sent = server.last_request[""]
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for parser, expected in EXPECTED_ALL.items():
        got = metrics["splits"]["all"][parser]
        assert {k: got[k] for k in expected} == pytest.approx(expected), parser
    for (split, parser), expected in EXPECTED_SPLITS.items():
        got = metrics["splits"][split][parser]
        assert {k: got[k] for k in expected} == pytest.approx(expected), (split, parser)
    low, high = metrics["splits"]["all"]["pope"]["f1_ci95"]
    assert 0 <= low <= 0.4 <= high <= 1
    manifest = json.loads((probe_dir / "manifest.json").read_text())
    assert metrics["probe_set"]["content_sha256"] == manifest["content_sha256"]
    assert metrics["model"].endswith("#llava-test") and metrics["backend"] == "endpoint"
    assert metrics["failed"] == 0 and metrics["n"] == 10

    rows = read_predictions(run)
    assert [r["id"] for r in rows] == [str(n) for n in range(10)]  # probe order
    assert [r["answer"] for r in rows] == [text for *_, text in SCRIPT]
    assert [r["parsed"] for r in rows] == ["yes", "no", "no", "yes"] + [None] * 6
    assert all(set(r) == {"id", "answer", "parsed", "latency_ms"} for r in rows)
    assert all(isinstance(r["latency_ms"], int) and r["latency_ms"] >= 0 for r in rows)

    # The request: the question plus the instruction, the probe's own image as a data URL.
    text = sent["messages"][-1]["content"][-1]["text"]
    assert text.startswith("Is there a") and text.endswith(PROMPT_SUFFIX)
    (url,) = images_in(sent)
    image = base64.b64decode(url.split(",", 1)[1])
    obj = next(o for o in ANSWERS if f" {o} " in text)
    index = [o for o, *_ in SCRIPT].index(obj)
    assert image == png(index % 3)
    assert sent["temperature"] == 0 and sent["max_tokens"] == 16

    err = capsys.readouterr().err
    assert "bench: 5/10 probes" in err and "bench: 10/10 probes" in err and "probes/s" in err


def test_a_call_that_fails_for_good_is_recorded_and_counts_as_unparsed(probe_dir, tmp_path):
    run = tmp_path / "run"
    # "cat" fails permanently (400); "dog" fails twice with 503 and is retried to an answer.
    with LLMServer(script={"cat": ["400"], "dog": ["503", "503"]}, responder=answer_for) as server:
        code = bench("--model", f"{server.url}#m", "--probes", str(probe_dir), "--out", str(run))
        assert server.counts["dog"] == 3 and server.counts["cat"] == 1
    assert code == 0
    rows = read_predictions(run)
    assert rows[0]["answer"] == "Yes." and rows[1]["answer"] is None
    assert "HTTP 400" in rows[1]["error"] and rows[1]["parsed"] is None
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["failed"] == 1
    # "cat" (gold yes) was answered "no" before; now it is unparsed even for POPE's rule.
    assert metrics["splits"]["all"]["pope"]["unparsed"] == 1
    assert metrics["splits"]["all"]["pope"]["accuracy"] == pytest.approx(0.4)


def test_concurrency_bounds_the_requests_in_flight(probe_dir, tmp_path):
    with LLMServer(responder=answer_for, latency=0.05) as server:
        code = bench("--model", f"{server.url}#m", "--probes", str(probe_dir),
                     "--out", str(tmp_path / "run"), "--concurrency", "3")  # fmt: skip
        assert server.max_in_flight == 3
    assert code == 0


def test_limit_scores_only_the_first_probes(probe_dir, tmp_path):
    with LLMServer(responder=answer_for) as server:
        code = bench("--model", f"{server.url}#m", "--probes", str(probe_dir),
                     "--out", str(tmp_path / "run"), "--limit", "4")  # fmt: skip
        assert server.total == 4
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["splits"]["all"]["strict"]["accuracy"] == 0.5
    assert list(metrics["splits"]) == ["all", "random"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--probes": "missing"}, "is not a folder"),
        ({"--probes": "not-a-set"}, "is not a probe set: it has no manifest.json"),
        ({"--probes": "tampered"}, "content_sha256 does not match"),
        ({"--model": "http://127.0.0.1:9/v1"}, "URL#MODEL"),
        ({"--model": "http://127.0.0.1:9/v1#"}, "MODEL is empty"),
        ({"--model": "./no/such/model"}, "cannot load the model to benchmark"),
        ({"--batch-size": "0"}, "--batch-size must be 1 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(probe_dir, tmp_path, capsys, change, message):
    (tmp_path / "not-a-set").mkdir()
    tampered = tmp_path / "tampered"
    write_probe_set(tampered, [("dog", "yes", "random")], images=1)
    (tampered / "probes.jsonl").write_text((tampered / "probes.jsonl").read_text() + "\n ")
    args = {"--model": "http://127.0.0.1:9/v1#m", "--probes": str(probe_dir),
            "--out": str(tmp_path / "run")} | change  # fmt: skip
    for key in ("--probes",):
        if args[key] in ("missing", "not-a-set", "tampered"):
            args[key] = str(tmp_path / args[key])
    code = bench(*[part for pair in args.items() for part in pair])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_image_sha_in_the_probe_set_is_what_is_sent(probe_dir):
    # The factory's images are what the probes name: the scorer reads them by sha256.
    manifest = json.loads((probe_dir / "manifest.json").read_text())
    assert hashlib.sha256(png(0)).hexdigest() in manifest["image_sha256s"]
