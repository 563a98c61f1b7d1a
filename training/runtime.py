"""The trainer runtime both stages share: where a process trains (``Runtime``: device, rank,
bf16), the learning-rate schedule, and the run folder's checkpoints and metrics files across a
resume. Torch is imported inside the functions, so a command's ``--help`` stays quick.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Runtime:
    """Where this process trains: its device, its rank among ``world_size``, bf16 or not."""

    device: torch.device
    rank: int
    world_size: int
    bf16: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> Any:
        import torch

        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def setup_runtime(device: str, precision: str) -> Runtime:
    """The device and process group for the ``device`` and ``precision`` config keys: under
    torchrun one GPU per local rank, else ``cuda:N`` as named; bf16 on CUDA when ``auto``."""
    import torch
    import torch.distributed as dist

    from training import distributed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        index = local_rank if world > 1 or ":" not in device else int(device.split(":")[1])
        where = torch.device("cuda", index)
        torch.cuda.set_device(where)
    else:
        where = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    bf16 = precision == "bf16" or (precision == "auto" and where.type == "cuda")
    return Runtime(where, distributed.rank(), distributed.world_size(), bf16)


def cosine_with_warmup(total: int, warmup: int, *, peak_in_warmup: bool) -> Callable[[int], float]:
    """The learning-rate factor of each step (for ``LambdaLR``): a linear warm-up over
    ``warmup`` steps, then a cosine decay that reaches 0 at step ``total``.

    The two stages ramp differently and keep doing so, so that a run repeats: Stage-1's warm-up
    ends one step short of the peak, ``(step + 1) / (warmup + 1)``; with ``peak_in_warmup``
    (Stage-2) its last step reaches it, ``(step + 1) / warmup``.

    >>> [round(cosine_with_warmup(6, 2, peak_in_warmup=False)(s), 3) for s in range(7)]
    [0.333, 0.667, 1.0, 0.854, 0.5, 0.146, 0.0]
    >>> [round(cosine_with_warmup(6, 2, peak_in_warmup=True)(s), 3) for s in range(3)]
    [0.5, 1.0, 1.0]
    """
    ramp = warmup if peak_in_warmup else warmup + 1

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / ramp
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def checkpoint_step(folder: Path) -> tuple[int, str]:
    """The sort key of a ``PREFIX-N`` checkpoint folder: its step N, then its name (so a
    leftover ``step-N.tmp`` sorts after ``step-N``).

    >>> checkpoint_step(Path("checkpoint-12")), checkpoint_step(Path("step-00000040.tmp"))
    ((12, 'checkpoint-12'), (40, 'step-00000040.tmp'))
    """
    number = folder.name.rsplit("-", 1)[1].partition(".")[0]
    return int(number), folder.name


def latest_checkpoint(out: Path, prefix: str, *, marker: str = "") -> Path | None:
    """The newest ``out/checkpoints/PREFIX-N`` folder, or ``None``. With ``marker``, only a
    folder that holds that file counts (Stage-1 writes ``trainer_state.pt`` last)."""
    found = [
        p
        for p in (out / "checkpoints").glob(f"{prefix}-*")
        if p.is_dir() and (not marker or (p / marker).is_file())
    ]
    return max(found, key=checkpoint_step, default=None)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of the JSON-lines file ``path`` logged after ``step``, the step a run
    resumes from (they are logged again); at step 0 the run starts over and none is kept. A
    line without a step counts as step 0."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and step > 0 and (json.loads(line).get("step") or 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
