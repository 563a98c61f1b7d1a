"""Helpers over ``torch.distributed`` for both stages' trainers; no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's rows.

    ``torch.distributed.nn.all_gather`` needs all-to-all in backward on non-NCCL backends;
    summing with all_reduce and taking our slice works on gloo too (on NCCL reduce_scatter
    moves 1/world of the bytes).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)  # [W, M, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty_like(grad[0])
            dist.reduce_scatter_tensor(out, grad)
            return out
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def gather_rows(x: torch.Tensor, *, with_grad: bool) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from every rank, concatenated in rank order, and this rank's offset.

    Ranks may hold different numbers of rows (regions per image vary): rows are padded to the
    largest count for the collective and the padding dropped afterwards.
    x: [n, ...] -> ([sum of n over ranks, ...], offset of this rank's first row)
    """
    if not is_distributed():
        return x, 0
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    if with_grad:
        stacked = _AllGatherWithGrad.apply(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        stacked = torch.stack(parts)
    rows = torch.cat([stacked[r, :size] for r, size in enumerate(sizes)])
    return rows, sum(sizes[: rank()])


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """A detached sum over ranks (counts and normalisers, never part of the graph)."""
    x = x.detach().clone()
    if is_distributed():
        dist.all_reduce(x)
    return x
