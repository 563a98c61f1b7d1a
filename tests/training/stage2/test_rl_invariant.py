"""Pinned per-step RL trajectory (as TRL's ``tests/invariant/``): a fixed-seed GRPO run of the
tiny LLaVA against the deterministic parity RM must reproduce the recorded reward, loss, KL and
gradient norm of every step. A change in rollouts, advantages, the KL term, reward weighting or
the prompt shows up here even when every other test still passes.

The values live in ``invariant/grpo_tiny_llava.json``, which says how to re-pin them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.training.stage2.test_rl import QUICK, metrics, parity_rm
from tests.workers.llm_server import LLMServer
from training.stage2.rl import rl_main

PINNED = Path(__file__).parent / "invariant" / "grpo_tiny_llava.json"
REPIN_ENV = "FGAM_REPIN_RL_INVARIANT"
# The run: 3 steps, a large lr so the policy visibly moves, the KL penalty on, format term on.
ARGS = ["max_steps=3", "lr=1e-3", "beta=0.04", "seed=0", "temperature=1.0", *QUICK]
KEYS = ("reward", "reward_rm", "reward_format", "loss", "kl", "grad_norm")
REL, ABS = 1e-4, 1e-6

HOW_TO_REPIN = (
    "These are the per-step values of a fixed-seed GRPO run (tests/training/stage2/"
    "test_rl_invariant.py). Re-pin ONLY for a deliberate change of the RL behaviour (TRL, "
    "torch or transformers upgrade, new reward or prompt), never to make a failing test pass: "
    f"run `{REPIN_ENV}=1 .venv/bin/python -m pytest tests/training/stage2/test_rl_invariant.py`"
    ", review the diff of this file, and say why in the commit message."
)


@pytest.fixture
def parity_endpoint() -> Iterator[str]:
    with LLMServer(responder=parity_rm) as server:
        yield f"{server.url}#parity-rm"


def test_a_fixed_seed_rl_run_reproduces_the_pinned_trajectory(
    stage2_version_dir: Path, tiny_llava_dir: Path, tmp_path: Path, parity_endpoint: str
) -> None:
    run = tmp_path / "rl"
    data = ["--data", str(stage2_version_dir), "--out", str(run)]
    assert rl_main([*data, f"model={tiny_llava_dir}", f"rm={parity_endpoint}", *ARGS]) == 0
    steps = [{key: line[key] for key in ("step", *KEYS)} for line in metrics(run)]

    if os.environ.get(REPIN_ENV) == "1":
        pinned = {"about": HOW_TO_REPIN, "args": ARGS, "tolerance": [REL, ABS], "steps": steps}
        PINNED.write_text(json.dumps(pinned, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"re-pinned {PINNED.name}: review its diff before committing")

    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert pinned["args"] == ARGS, "the pinned run used other arguments: re-pin deliberately"
    assert [s["step"] for s in steps] == [s["step"] for s in pinned["steps"]]
    for got, want in zip(steps, pinned["steps"], strict=True):
        for key in KEYS:
            assert math.isclose(got[key], want[key], rel_tol=REL, abs_tol=ABS), (
                f"step {got['step']} {key}: got {got[key]!r}, pinned {want[key]!r}"
            )
    # the pinned run is not degenerate: rewards vary and the policy leaves the reference
    assert len({s["reward"] for s in steps}) > 1
    assert steps[-1]["kl"] > 0
