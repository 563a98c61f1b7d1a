"""The Stage-1 objective, preprint Eq. 3: alpha*ITCL + beta*RTCL + gamma*SCC."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.stage1.losses.itcl import ITCLoss
from training.stage1.losses.rtcl import RTCLoss
from training.stage1.losses.scc import SCCLoss


class Stage1Loss(nn.Module):
    """Weighted sum of the terms; a term whose weight is 0 is not computed at all (ablations).

    Returns ``{"loss": total, "itcl_loss": ..., "rtcl_loss": ..., "scc_loss": ...}`` with only
    the computed terms present. ``rtcl_reduction`` is ``RTCLoss``'s: "paper" (Eq. 1's sum of the
    two directions, the default) or "mean" (half of it, CLIP's convention); ITCL is always the
    mean of its two directions.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.5,
        gamma: float = 0.2,
        *,
        mask_duplicates: bool = True,
        scc_class_weights: str = "none",
        rtcl_reduction: str = "paper",
    ) -> None:
        super().__init__()
        self.weights = {"itcl": alpha, "rtcl": beta, "scc": gamma}
        self.itcl = ITCLoss(mask_duplicates)
        self.rtcl = RTCLoss(mask_duplicates, rtcl_reduction)
        self.scc = SCCLoss(scc_class_weights)

    def forward(self, out: dict[str, Any], batch: Any) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        scale = out["logit_scale"]
        if self.weights["itcl"] > 0:
            caption_emb = out["text_emb"][batch.caption_index]  # [B, D]
            terms |= self.itcl(
                out["image_emb"], caption_emb, batch.text_ids[batch.caption_index], scale
            )
        if self.weights["rtcl"] > 0:
            region_text_emb = out["text_emb"][batch.region_caption_index]  # [R, D]
            terms |= self.rtcl(
                out["region_emb"],
                region_text_emb,
                batch.text_ids[batch.region_caption_index],
                scale,
            )
        if self.weights["scc"] > 0:
            terms |= self.scc(out["relation_logits"], batch.relation_labels)
        total = sum(
            self.weights[name.removesuffix("_loss")] * value for name, value in terms.items()
        )
        assert isinstance(total, torch.Tensor)
        return {"loss": total, **terms}
