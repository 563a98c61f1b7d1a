"""Symmetric InfoNCE with false-negative masking, local rows against gathered rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.distributed import gather_rows, sum_over_ranks, world_size


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses run in fp32 at least (bf16 features from autocast are upcast; fp64 stays)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def local_symmetric_infonce(
    visual: torch.Tensor,
    text: torch.Tensor,
    text_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    mask_duplicates: bool,
    sum_directions: bool = False,
) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows ``visual[k] <-> text[k]``, against every rank's rows.

    visual, text: [n, D] L2-normalised; text_ids: [n] int64, equal for identical caption
    text; logit_scale: [] (1/tau). Returns this rank's share of the global-mean loss: per row,
    the mean of the two directions (CLIP), or their sum with ``sum_directions`` (preprint Eq. 1).

    With ``mask_duplicates`` a column whose caption text equals the row's own caption is
    removed from the denominator (it is not a negative), in both directions.
    """
    all_visual, offset = gather_rows(visual, with_grad=True)  # [N, D]
    all_text, _ = gather_rows(text, with_grad=True)  # [N, D]
    n = visual.shape[0]
    total = sum_over_ranks(torch.tensor(float(n), device=visual.device))
    if total.item() == 0:
        return (visual.sum() + text.sum()) * 0.0
    target = torch.arange(n, device=visual.device) + offset  # [n]
    logits_v2t = logit_scale * visual @ all_text.T  # [n, N] region/image -> text
    logits_t2v = logit_scale * text @ all_visual.T  # [n, N] text -> region/image
    if mask_duplicates:
        all_ids, _ = gather_rows(text_ids, with_grad=False)  # [N]
        same = text_ids[:, None] == all_ids[None, :]  # [n, N]
        same[torch.arange(n, device=same.device), target] = False
        logits_v2t = logits_v2t.masked_fill(same, float("-inf"))
        logits_t2v = logits_t2v.masked_fill(same, float("-inf"))
    ce = F.cross_entropy(logits_v2t, target, reduction="sum") + F.cross_entropy(
        logits_t2v, target, reduction="sum"
    )
    if not sum_directions:
        ce = ce / 2
    return ce * world_size() / total
