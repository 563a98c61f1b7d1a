"""RTCL: region-text contrastive learning, preprint Eq. 1."""

from __future__ import annotations

import torch
from torch import nn

from training.stage1.losses.contrastive import local_symmetric_infonce, upcast

REDUCTIONS = ("paper", "mean")


class RTCLoss(nn.Module):
    """Eq. 1: symmetric InfoNCE over all region-text pairs of the batch (all images, all
    ranks), ``-1/B sum_i [log softmax_j(v_i.e_j/tau)_i + log softmax_j(e_i.v_j/tau)_i]``.

    ``reduction="paper"`` (the default) is Eq. 1's scale: the two directions are *summed* per
    pair and averaged over B, so ``beta`` weights Eq. 1 as written. ``reduction="mean"``
    averages the two directions as CLIP does (and as ITCL always does), which halves the term:
    with it, beta = 0.5 weights Eq. 1 by 0.25.

    The preprint's second term divides by ``sum_j exp(e_{t_rj}.v_{r_j}/tau)``, a sum over the
    *matched* pairs, which is a typo (it does not make a text->region softmax). We implement
    the standard text->region direction ``sum_j exp(e_{t_ri}.v_{r_j}/tau)``.

    Regions whose captions have identical text are not used as each other's negatives
    (false-negative masking), since "a red car" in two images is a correct match for both.
    """

    def __init__(self, mask_duplicates: bool = True, reduction: str = "paper") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction is one of {', '.join(REDUCTIONS)}, not {reduction!r}")
        self.mask_duplicates = mask_duplicates
        self.reduction = reduction

    def forward(
        self,
        region_emb: torch.Tensor,  # [R, D] normalised v_r
        region_text_emb: torch.Tensor,  # [R, D] normalised e_{t_r}
        region_text_ids: torch.Tensor,  # [R] caption text ids
        logit_scale: torch.Tensor,  # [] = 1/tau
    ) -> dict[str, torch.Tensor]:
        loss = local_symmetric_infonce(
            upcast(region_emb),
            upcast(region_text_emb),
            region_text_ids,
            upcast(logit_scale),
            mask_duplicates=self.mask_duplicates,
            sum_directions=self.reduction == "paper",
        )
        return {"rtcl_loss": loss}
