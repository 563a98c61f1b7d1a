"""Turn Stage-1 records into packed batches: images, unique texts, regions, SCC pairs.

Regions of all images are packed into one [R] axis; the ordered pairs (i, j), i != j, of
regions in the same image and their GT_SpatialRel labels are built once here, vectorised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import torch

from training.data.version import DatasetVersion, Stage1Record, load_image_bytes, open_image
from training.geometry import relation_labels


def text_id(text: str) -> int:
    """A stable 63-bit id of a caption's text, equal across processes and ranks."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


@dataclass
class Stage1Batch:
    pixel_values: torch.Tensor  # [N, 3, S, S]
    input_ids: torch.Tensor  # [T, L] unique texts
    attention_mask: torch.Tensor  # [T, L]
    text_ids: torch.Tensor  # [T]
    caption_index: torch.Tensor  # [N] into texts
    region_caption_index: torch.Tensor  # [R] into texts
    region_image: torch.Tensor  # [R]
    region_slot: torch.Tensor  # [R]
    boxes: torch.Tensor  # [R, 4] normalised to the model input
    pairs: torch.Tensor  # [P, 2]
    relation_labels: torch.Tensor  # [P]
    texts: list[str]

    def to(self, device: torch.device | str) -> Stage1Batch:
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return Stage1Batch(**moved)

    @property
    def num_images(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_regions(self) -> int:
        return int(self.boxes.shape[0])


def same_image_pairs(region_image: torch.Tensor) -> torch.Tensor:
    """All ordered pairs (i, j), i != j, of regions in the same image: [R] -> [P, 2].

    >>> same_image_pairs(torch.tensor([0, 0, 1, 2, 2])).tolist()
    [[0, 1], [1, 0], [3, 4], [4, 3]]
    """
    same = region_image[:, None] == region_image[None, :]  # [R, R]
    same.fill_diagonal_(False)
    return same.nonzero()


@dataclass
class BatchBuilder:
    """Decodes records (pad to square with the mean colour, as LLaVA-1.5 does, then resize; no
    centre crop, so every box stays in view) and tokenizes captions."""

    version: DatasetVersion
    tokenizer: Any
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    max_regions: int = 20
    max_text_tokens: int = 77

    def image_tensor(self, rec: Stage1Record) -> tuple[torch.Tensor, float, float, float]:
        """[3, S, S] normalised, and the (pad_x, pad_y, side) that map pixel boxes into it."""
        from PIL import Image

        image = open_image(load_image_bytes(self.version, rec))
        width, height = image.size
        side = max(width, height)
        pad_x, pad_y = (side - width) / 2, (side - height) / 2
        if width != height:
            fill = tuple(round(m * 255) for m in self.image_mean)
            square = Image.new("RGB", (side, side), fill)
            square.paste(image, (int(pad_x), int(pad_y)))
            image, pad_x, pad_y = square, float(int(pad_x)), float(int(pad_y))
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = data.view(self.image_size, self.image_size, 3).permute(2, 0, 1).float() / 255
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (pixels - mean) / std, pad_x, pad_y, float(side)

    def __call__(self, records: list[Stage1Record]) -> Stage1Batch:
        texts: dict[str, int] = {}
        pixels: list[torch.Tensor] = []
        caption_index: list[int] = []
        px_boxes, norm_boxes, region_image, region_slot, region_text = [], [], [], [], []
        for n, rec in enumerate(records):
            tensor, pad_x, pad_y, side = self.image_tensor(rec)
            pixels.append(tensor)
            caption = str(rec.record.get("caption", ""))
            caption_index.append(texts.setdefault(caption, len(texts)))
            width, height = float(rec.record["width"]), float(rec.record["height"])
            regions = sorted(rec.record.get("regions", []), key=_score_key)
            slot = 0
            for region in regions:
                x0, y0, x1, y1 = (float(v) for v in region["box"])
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
                if x1 <= x0 or y1 <= y0 or slot >= self.max_regions:
                    continue
                px_boxes.append((x0, y0, x1, y1))
                norm_boxes.append(
                    (
                        (x0 + pad_x) / side,
                        (y0 + pad_y) / side,
                        (x1 + pad_x) / side,
                        (y1 + pad_y) / side,
                    )
                )
                region_image.append(n)
                region_slot.append(slot)
                region_text.append(texts.setdefault(str(region["caption"]), len(texts)))
                slot += 1
        text_list = list(texts)
        tokens = self.tokenizer(
            text_list,
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        region_image_t = torch.tensor(region_image, dtype=torch.long)
        pairs = same_image_pairs(region_image_t)
        px = torch.tensor(px_boxes, dtype=torch.float64).reshape(-1, 4)
        return Stage1Batch(
            pixel_values=torch.stack(pixels),
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            text_ids=torch.tensor([text_id(t) for t in text_list], dtype=torch.long),
            caption_index=torch.tensor(caption_index, dtype=torch.long),
            region_caption_index=torch.tensor(region_text, dtype=torch.long),
            region_image=region_image_t,
            region_slot=torch.tensor(region_slot, dtype=torch.long),
            boxes=torch.tensor(norm_boxes, dtype=torch.float32).reshape(-1, 4),
            pairs=pairs,
            relation_labels=relation_labels(px[pairs[:, 0]], px[pairs[:, 1]]),
            texts=text_list,
        )


def _score_key(region: dict) -> float:
    """Highest score first; a null score (ground truth, human boxes) counts as 1."""
    score = region.get("score")
    return -float(1.0 if score is None else score)
