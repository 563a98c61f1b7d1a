"""ITCL: the global image-caption contrastive loss (CLIP; preprint §3.2.2)."""

from __future__ import annotations

import torch
from torch import nn

from training.stage1.losses.contrastive import local_symmetric_infonce, upcast


class ITCLoss(nn.Module):
    """Symmetric InfoNCE between each image and its global caption (Radford et al. 2021),
    batch-wide across ranks, identical captions masked as negatives if asked."""

    def __init__(self, mask_duplicates: bool = True) -> None:
        super().__init__()
        self.mask_duplicates = mask_duplicates

    def forward(
        self,
        image_emb: torch.Tensor,  # [B, D] normalised
        caption_emb: torch.Tensor,  # [B, D] normalised
        caption_ids: torch.Tensor,  # [B] caption text ids
        logit_scale: torch.Tensor,  # []
    ) -> dict[str, torch.Tensor]:
        loss = local_symmetric_infonce(
            upcast(image_emb),
            upcast(caption_emb),
            caption_ids,
            upcast(logit_scale),
            mask_duplicates=self.mask_duplicates,
        )
        return {"itcl_loss": loss}
