"""Stage-2 RL benchmark on CPU with the tiny random LLaVA of the tests.

    .venv/bin/python -m tests.bench.bench_stage2_rl [--group 8] [--rm-latency 0.05]
        [--steps 4] [--batch-size 8] [--num-generations 4] [--max-new-tokens 16]

1. The RM reward of one generation batch against an endpoint RM with a fixed per-call latency
   (the loopback OpenAI-compatible server of the tests): all critiques gathered at once
   (``rm_concurrency`` = the group) against one at a time (``rm_concurrency=1``), ms per batch.
2. GRPO throughput: ``python -m training rl`` on the tiny LLaVA and a synthetic version, the RM
   played by the loopback server: optimizer steps/s and completions/s from ``metrics.jsonl``,
   the first step (compilation of the generation path, warm-up) excluded.

Not collected by pytest; the figures compare changes on one machine, not absolute speeds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.workers.llm_server import LLMServer
from training.formats import STOP_PHRASE


def parity_rm(request: Mapping[str, Any]) -> str:
    text = request["messages"][-1]["content"]
    answer = re.search(r"^Answer: (.*)$", text, re.MULTILINE)
    return STOP_PHRASE if answer and len(answer.group(1)) % 2 == 0 else "The colour is wrong."


def bench_rm_reward(group: int, latency: float, repeats: int = 5) -> dict[str, float]:
    from training.stage2.generators import EndpointGenerator
    from training.stage2.rewards import RMReward

    answers = [f"The cup {'is ' * n}left of the plate." for n in range(group)]
    columns = {"question": ["Where is the cup?"] * group, "evidence": ["cup [0, 0, 8, 8]"] * group}
    result: dict[str, float] = {}
    with LLMServer(responder=parity_rm, latency=latency) as server:
        for label, concurrency in (("gathered", group), ("sequential", 1)):
            reward = RMReward(
                EndpointGenerator(base_url=server.url, model="rm"), concurrency=concurrency
            )

            async def batches(reward: RMReward = reward) -> list[float]:
                times = []
                for _ in range(repeats + 1):  # the first call opens the client
                    started = time.perf_counter()
                    await reward(["p"] * group, answers, **columns)
                    times.append(time.perf_counter() - started)
                await reward.rm.aclose()
                return times[1:]

            result[f"{label}_ms_per_batch"] = 1000 * statistics.median(asyncio.run(batches()))
    return result


def bench_grpo(args: argparse.Namespace, work: Path) -> dict[str, float]:
    from training.data.synthetic import write_version
    from training.stage2.rl import rl_main
    from training.stage2.tiny import build_tiny_llava

    model = build_tiny_llava(work / "llava")
    version = write_version(work / "version", images=32, shard_size=32, seed=1)
    run = work / "run"
    with LLMServer(responder=parity_rm) as server:
        code = rl_main(
            [
                "--data", str(version), "--out", str(run), f"model={model}",
                f"rm={server.url}#rm", f"max_steps={args.steps}",
                f"batch_size={args.batch_size}", f"num_generations={args.num_generations}",
                f"max_new_tokens={args.max_new_tokens}", "device=cpu",
            ]
        )  # fmt: skip
    if code:
        raise SystemExit(f"rl run failed with exit code {code}")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timed = lines[1:] or lines
    return {
        "steps_per_s": statistics.mean(line["steps_per_s"] for line in timed),
        "completions_per_s": statistics.mean(line["samples_per_s"] for line in timed),
        "mean_completion_tokens": statistics.mean(line["completion_length"] for line in timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", type=int, default=8, help="completions judged per batch")
    parser.add_argument("--rm-latency", type=float, default=0.05, help="seconds per RM call")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    rm = bench_rm_reward(args.group, args.rm_latency)
    print(
        f"RM reward, {args.group} completions, {1000 * args.rm_latency:.0f} ms per RM call: "
        f"gathered {rm['gathered_ms_per_batch']:.0f} ms, "
        f"sequential {rm['sequential_ms_per_batch']:.0f} ms per batch"
    )
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        grpo = bench_grpo(args, Path(tmp))
    print(
        f"GRPO tiny LLaVA, batch {args.batch_size} ({args.num_generations} per prompt), "
        f"<= {args.max_new_tokens} new tokens: {grpo['steps_per_s']:.2f} steps/s, "
        f"{grpo['completions_per_s']:.1f} completions/s "
        f"(mean completion {grpo['mean_completion_tokens']:.1f} tokens)"
    )


if __name__ == "__main__":
    main()
