"""SCC: the spatial consistency constraint, preprint Eq. 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import sum_over_ranks, world_size
from training.geometry import RELATIONS
from training.stage1.losses.contrastive import upcast


class SCCLoss(nn.Module):
    """Eq. 2: cross-entropy of the relation predictor ``g(v_i, v_j)`` against
    GT_SpatialRel(r_i, r_j) (``docs/formats.md``, ``training.geometry``) over every ordered
    pair i != j of regions in the same image.

    g lives in the model (so DDP syncs it) and sees ``[v_i, v_j, v_i*v_j, v_i-v_j]`` only,
    never box coordinates. Eq. 2 sums over pairs; we take the mean over all pairs of the
    global batch, so gamma does not scale with the number of regions per image. Optional
    class weights ``1/sqrt(count)`` (counts over the global batch) temper the imbalance
    between the directional classes and ``contains``/``inside``.
    """

    def __init__(self, class_weights: str = "none") -> None:
        super().__init__()
        self.class_weights = class_weights

    def forward(
        self,
        relation_logits: torch.Tensor,  # [P, C] g's scores for each ordered pair
        relation_labels: torch.Tensor,  # [P] indices into RELATIONS
    ) -> dict[str, torch.Tensor]:
        logits = upcast(relation_logits)
        ce = F.cross_entropy(logits, relation_labels, reduction="none")  # [P]
        if self.class_weights == "inverse_sqrt":
            counts = sum_over_ranks(
                torch.bincount(relation_labels, minlength=len(RELATIONS)).float()
            )  # [C]
            weight = counts.clamp(min=1).rsqrt()[relation_labels]  # [P]
        else:
            weight = torch.ones_like(ce)
        total = sum_over_ranks(weight.sum())
        if total.item() == 0:
            return {"scc_loss": logits.sum() * 0.0}
        return {"scc_loss": (weight * ce).sum() * world_size() / total}
