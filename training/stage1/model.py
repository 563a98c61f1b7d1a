"""The Stage-1 model: a transformers ``CLIPModel`` plus region pooling, a region head and the
relation predictor g.

The CLIP towers, their projections and the temperature stay inside the ``CLIPModel`` so that a
checkpoint is a plain ``save_pretrained`` folder whose vision tower LLaVA loads unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.geometry import RELATIONS

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps 1/tau at 100


def roi_align_pool(
    fmap: torch.Tensor,  # [N, C, H, W] patch-token grid
    boxes: torch.Tensor,  # [R, 4] x0, y0, x1, y1 normalised to [0, 1] of the model input
    region_image: torch.Tensor,  # [R] which image each box is in
    region_slot: torch.Tensor,  # [R] position of the box among its image's boxes
    samples: int = 4,
) -> torch.Tensor:
    """Average of ``samples x samples`` bilinear samples over each box: RoIAlign with output
    size 1, ``aligned=True`` and sampling ratio ``samples``, via one ``grid_sample`` call.

    Boxes are laid out per image in a padded [N, R_max] grid so no loop over images is needed.
    Returns [R, C].
    """
    n_images, channels = fmap.shape[:2]
    n_regions = boxes.shape[0]
    if n_regions == 0:
        return fmap.new_zeros((0, channels)) + fmap.sum() * 0
    steps = (torch.arange(samples, device=fmap.device, dtype=boxes.dtype) + 0.5) / samples  # [S]
    xs = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])  # [R, S]
    ys = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])  # [R, S]
    points = (
        torch.stack(  # [R, S, S, 2] as (x, y) in grid_sample's [-1, 1]
            (xs[:, None, :].expand(-1, samples, -1), ys[:, :, None].expand(-1, -1, samples)), dim=-1
        )
        * 2
        - 1
    )
    slots = int(region_slot.max().item()) + 1
    grid = points.new_zeros((n_images, slots, samples * samples, 2))  # [N, R_max, S*S, 2]
    grid[region_image, region_slot] = points.reshape(n_regions, samples * samples, 2)
    sampled = F.grid_sample(
        fmap, grid.to(fmap.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )  # [N, C, R_max, S*S]
    pooled = sampled.mean(dim=-1).transpose(1, 2)  # [N, R_max, C]
    return pooled[region_image, region_slot]  # [R, C]


class RelationPredictor(nn.Module):
    """g of Eq. 2: an MLP over ``[v_i, v_j, v_i*v_j, v_i-v_j]``; no box coordinates."""

    def __init__(self, dim: int, hidden: int, classes: int = len(RELATIONS)) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, v_i: torch.Tensor, v_j: torch.Tensor) -> torch.Tensor:
        # v_i, v_j: [P, D] -> [P, classes]
        return self.mlp(torch.cat([v_i, v_j, v_i * v_j, v_i - v_j], dim=-1))


class RegionCLIP(nn.Module):
    """CLIP with region embeddings. ``forward`` returns normalised embeddings and g's logits.

    The region head (LayerNorm + Linear) starts as a copy of CLIP's own post-LayerNorm and
    visual projection, so region embeddings begin in the shared space.
    """

    def __init__(
        self,
        clip: Any,
        *,
        feature_layer: int = -2,
        roi_samples: int = 4,
        relation_hidden: int = 512,
    ) -> None:
        super().__init__()
        self.clip = clip
        self.feature_layer = feature_layer
        self.roi_samples = roi_samples
        width = clip.config.vision_config.hidden_size
        dim = clip.config.projection_dim
        norm, projection = nn.LayerNorm(width), nn.Linear(width, dim, bias=False)
        with torch.no_grad():
            norm.load_state_dict(clip.vision_model.post_layernorm.state_dict())
            projection.weight.copy_(clip.visual_projection.weight)
        self.region_head = nn.Sequential(norm, projection)
        self.relation_head = RelationPredictor(dim, relation_hidden)

    def heads_state_dict(self) -> dict[str, Any]:
        return {
            "region_head": self.region_head.state_dict(),
            "relation_head": self.relation_head.state_dict(),
        }

    def load_heads_state_dict(self, state: dict[str, Any]) -> None:
        self.region_head.load_state_dict(state["region_head"])
        self.relation_head.load_state_dict(state["relation_head"])

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # [T, L] -> [T, D] normalised
        pooled = self.clip.text_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).pooler_output
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,  # [N, 3, S, S]
        input_ids: torch.Tensor | None,  # [T, L] unique texts of the batch
        attention_mask: torch.Tensor | None,  # [T, L]
        boxes: torch.Tensor,  # [R, 4] normalised to the model input
        region_image: torch.Tensor,  # [R]
        region_slot: torch.Tensor,  # [R]
        pairs: torch.Tensor,  # [P, 2] region indices (i, j), same image, i != j
        *,
        need_image: bool = True,
        need_regions: bool = True,
        need_pairs: bool = True,
    ) -> dict[str, torch.Tensor]:
        vision = self.clip.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        out: dict[str, torch.Tensor] = {"logit_scale": self.clip.logit_scale.exp()}
        if need_image:
            out["image_emb"] = F.normalize(
                self.clip.visual_projection(vision.pooler_output), dim=-1
            )
        if input_ids is not None and attention_mask is not None:
            out["text_emb"] = self.encode_text(input_ids, attention_mask)
        if need_regions or need_pairs:
            tokens = vision.hidden_states[self.feature_layer][:, 1:, :]  # [N, H*W, C], no CLS
            side = math.isqrt(tokens.shape[1])
            fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
            pooled = roi_align_pool(fmap, boxes, region_image, region_slot, self.roi_samples)
            region_emb = F.normalize(self.region_head(pooled), dim=-1)  # [R, D]
            out["region_emb"] = region_emb
            if need_pairs:
                out["relation_logits"] = self.relation_head(
                    region_emb[pairs[:, 0]], region_emb[pairs[:, 1]]
                )  # [P, len(RELATIONS)]
        return out
