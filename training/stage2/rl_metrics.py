"""The RL run's ``metrics.jsonl``: TRL's logs as flat lines in the Stage-1/SFT style (``step``,
``loss``, ``lr``, throughput, plus each reward term, ``kl``, the RM's accept rate and its
failed and unusable critiques), which the web app follows while the job runs.
``training.runtime`` keeps it right across a resume.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

# TRL's log keys -> metrics.jsonl keys (Stage-1/SFT style: flat, snake_case, "lr").
METRIC_KEYS = {
    "loss": "loss",
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "entropy": "entropy",
    "grad_norm": "grad_norm",
    "learning_rate": "lr",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "rm/accept_rate": "rm_accept_rate",
    "rm/failures": "rm_failures",
    "rm/unusable": "rm_unusable",
}


def metrics_line(logs: dict[str, Any], step: int, epoch: float | None) -> dict[str, Any]:
    """One metrics.jsonl line from a TRL log dict: the known keys renamed, each reward term as
    ``reward_<name>`` (``rewards/rm/mean`` -> ``reward_rm``), NaN as null.

    >>> metrics_line({"loss": 0.5, "rewards/format_reward/mean": -0.25, "kl": float("nan"),
    ...               "learning_rate": 1e-6}, 3, 0.5)
    {'step': 3, 'epoch': 0.5, 'loss': 0.5, 'reward_format': -0.25, 'kl': None, 'lr': 1e-06}
    """
    line: dict[str, Any] = {"step": step, "epoch": None if epoch is None else round(epoch, 4)}
    for key, value in logs.items():
        if key.startswith("rewards/") and key.endswith("/mean"):
            name = key[len("rewards/") : -len("/mean")].removesuffix("_reward")
            target = f"reward_{name}"
        elif key in METRIC_KEYS:
            target = METRIC_KEYS[key]
        else:
            continue
        number = float(value)
        line[target] = None if math.isnan(number) else number
    return line


def metrics_callback(path: Path, completions_per_step: int, step_offset: int = 0) -> Any:
    """A ``TrainerCallback`` that appends one ``metrics_line`` per TRL log, plus throughput
    (completions and optimizer steps per second since the previous line), on the main rank.
    ``step_offset`` is added to the steps (RL after SFT continues the SFT step count)."""
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.last_time = time.perf_counter()
            self.last_step: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last_time, self.last_step = time.perf_counter(), state.global_step

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return  # the end-of-training summary has no "loss" key: not a step line
            now = time.perf_counter()
            steps = state.global_step - (self.last_step or 0)
            elapsed = max(now - self.last_time, 1e-9)
            line = metrics_line(logs, step_offset + state.global_step, state.epoch)
            line["phase"] = "rl"
            line["samples_per_s"] = steps * completions_per_step / elapsed
            line["steps_per_s"] = steps / elapsed
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            self.last_time, self.last_step = now, state.global_step

    return MetricsJsonl()
