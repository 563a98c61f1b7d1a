"""Grounding DINO as a plain function: images and phrase lists in, pixel boxes out.

No Django and no Celery here: the pseudo-label task reads images and settings, calls
``load_detector(...).detect(...)`` and writes the regions.

This module is the part every backend shares: what a detector takes and gives, the run below
and the post-processing of its outputs into boxes. The prompts are built in
``workers.detection_prompts``; the backends (the ``transformers`` port and the original
``groundingdino`` package) and ``load_detector`` are ``workers.grounding_dino``.

How a call runs (``Detector.detect``):

1. Each image's phrase list is deduplicated and split into *chunks* whose prompt
   ``"[CLS] p1 . p2 . ... pk . [SEP]"`` fits the text encoder (``max_prompt_tokens``, never more
   than the model's ``max_text_len``, 256 for the released checkpoints).
2. Every image is preprocessed once by the checkpoint's own image processor; each
   (image, chunk) pair is one row of a forward pass. Rows are grouped by the processed image
   size, so a batch holds only images of the same shape and nothing is padded: an image's
   detections then never depend on which images share its batch, which keeps re-run batches
   identical (``DetectorParams.pad_mixed_sizes=True`` pads mixed sizes into one forward
   instead, as the processor does for a list of images: faster on a GPU for varied shapes,
   at the price of that independence).
3. Post-processing follows ``GroundingDinoProcessor.post_process_grounded_object_detection``
   (sigmoid of the token logits, centre boxes scaled by the original image size) but maps
   tokens back to the *caller's* phrases by their token spans instead of decoding token ids:

   - a query's box score is its highest token probability over the phrase tokens
     (separators and ``[CLS]``/``[SEP]`` excluded); it must exceed ``box_threshold``;
   - its phrase is the one with the highest mean token probability, which must exceed
     ``text_threshold`` (so a two-word phrase needs both words, not just one of them);
   - boxes are clipped to the image; boxes with no area left are dropped.
4. Detections of all chunks are merged and per-phrase NMS (IoU > ``nms_iou`` suppressed)
   keeps the best of overlapping boxes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.geometry import Box, iou
from workers.detection_prompts import PromptChunk, build_prompt, chunk_by_length

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

TOKEN_CACHE_SIZE = 100_000  # phrases whose token ids a detector remembers


@dataclass(frozen=True)
class Detection:
    box: Box  # pixel [x0, y0, x1, y1] of the image it came from, clipped to it, x0<x1, y0<y1
    score: float  # 0..1
    phrase: str  # the matched prompt phrase, exactly as the caller gave it


@dataclass(frozen=True)
class DetectorParams:
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou: float = 0.5  # per-phrase NMS; 1.0 turns it off
    max_prompt_tokens: int = 256  # chunking limit for long vocabularies
    # Additions (optional):
    batch_size: int | None = None  # rows (image, chunk) per forward; None: len(images)
    pad_mixed_sizes: bool = False  # pad images of different shapes into one forward


class DetectorError(RuntimeError):
    """The detector cannot be loaded or run as asked (missing backend, bad model folder)."""


# --------------------------------------------------------------------------- outputs to boxes


def cxcywh_to_pixels(box: Sequence[float], width: int, height: int) -> Box | None:
    """A normalised centre box to pixel ``[x0, y0, x1, y1]`` clipped to the image, or None
    when nothing of it lies inside.

    >>> cxcywh_to_pixels((0.5, 0.5, 0.5, 0.5), 200, 100)
    (50.0, 25.0, 150.0, 75.0)
    >>> cxcywh_to_pixels((0.0, 0.5, 0.5, 1.2), 200, 100)
    (0.0, 0.0, 50.0, 100.0)
    >>> cxcywh_to_pixels((1.2, 0.5, 0.1, 0.1), 200, 100) is None
    True
    """
    cx, cy, w, h = (float(v) for v in box)
    x0 = min(max((cx - w / 2) * width, 0.0), float(width))
    x1 = min(max((cx + w / 2) * width, 0.0), float(width))
    y0 = min(max((cy - h / 2) * height, 0.0), float(height))
    y1 = min(max((cy + h / 2) * height, 0.0), float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _order(d: Detection) -> tuple[float, str, Box]:
    return (-d.score, d.phrase, d.box)


def nms_per_phrase(detections: Iterable[Detection], iou_threshold: float) -> list[Detection]:
    """Greedy NMS within each phrase: a box overlapping a better one of the same phrase by
    IoU > ``iou_threshold`` is dropped. Result sorted by score (best first), then phrase.

    >>> a = Detection((0, 0, 10, 10), 0.9, "dog")
    >>> b = Detection((1, 0, 11, 10), 0.8, "dog")
    >>> c = Detection((1, 0, 11, 10), 0.7, "cat")
    >>> nms_per_phrase([c, b, a], 0.5) == [a, c]
    True
    >>> len(nms_per_phrase([a, b, c], 1.0))
    3
    """
    by_phrase: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        by_phrase[d.phrase].append(d)
    kept: list[Detection] = []
    for group in by_phrase.values():
        group.sort(key=_order)
        survivors: list[Detection] = []
        for d in group:
            if all(iou(d.box, s.box) <= iou_threshold for s in survivors):
                survivors.append(d)
        kept.extend(survivors)
    kept.sort(key=_order)
    return kept


def decode_queries(
    probs: torch.Tensor,
    boxes: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    phrases: Sequence[str],
    width: int,
    height: int,
    params: DetectorParams,
) -> list[Detection]:
    """Detections of one (image, prompt) row.

    ``probs``: (queries, text_len) sigmoid token probabilities; ``boxes``: (queries, 4)
    normalised centre boxes; ``spans``: each phrase's token range in the prompt.
    """
    import torch

    if not spans:
        return []
    # (queries, phrases): best and mean token probability inside each phrase's span.
    best = torch.stack([probs[:, s:e].max(dim=1).values for s, e in spans], dim=1)
    mean = torch.stack([probs[:, s:e].mean(dim=1) for s, e in spans], dim=1)
    box_score = best.max(dim=1).values
    phrase_score, phrase_index = mean.max(dim=1)
    keep = (box_score > params.box_threshold) & (phrase_score > params.text_threshold)
    out = []
    for q in keep.nonzero(as_tuple=True)[0].tolist():
        pixel_box = cxcywh_to_pixels(boxes[q].tolist(), width, height)
        if pixel_box is not None:
            phrase = phrases[int(phrase_index[q])]
            out.append(Detection(pixel_box, float(box_score[q]), phrase))
    return out


# --------------------------------------------------------------------------- detector


@dataclass
class _Row:
    image: int  # index into the caller's images
    chunk: PromptChunk


class Detector:
    """A loaded detector. Backends implement ``_tokenize``, ``_preprocess`` and ``_forward``;
    chunking, batching, decoding and NMS are shared."""

    model_id: str
    backend: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    max_text_len: int = 256
    _token_cache: dict[str, tuple[int, ...]]

    def detect(
        self,
        images: Sequence[Image.Image],
        phrases: Sequence[Sequence[str]],
        params: DetectorParams = DetectorParams(),
    ) -> list[list[Detection]]:
        """One detection list per image, best score first; see the module docstring."""
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        rows = [
            _Row(i, chunk)
            for i, image_phrases in enumerate(phrases)
            for chunk in self.prompt_chunks(image_phrases, params)
        ]
        found: list[list[Detection]] = [[] for _ in images]
        if not rows:
            return found
        needed = sorted({row.image for row in rows})
        tensors = dict(zip(needed, self._preprocess([images[i] for i in needed]), strict=True))
        batch_size = params.batch_size or max(len(images), 1)
        for batch in _batches(rows, tensors, batch_size, params.pad_mixed_sizes):
            results = self._forward([tensors[r.image] for r in batch], [r.chunk for r in batch])
            for row, (probs, boxes) in zip(batch, results, strict=True):
                width, height = images[row.image].size
                found[row.image].extend(
                    decode_queries(
                        probs, boxes, row.chunk.spans, row.chunk.phrases, width, height, params
                    )
                )
        return [nms_per_phrase(d, params.nms_iou) for d in found]

    def prompt_chunks(
        self,
        phrases: Sequence[str],
        params: DetectorParams = DetectorParams(),
    ) -> list[PromptChunk]:
        """The prompts ``detect`` runs for one image's phrase list, in order."""
        limit = min(params.max_prompt_tokens, self.max_text_len)
        unique = list(dict.fromkeys(p for p in phrases if p.strip()))
        token_ids = []
        for phrase in unique:
            ids = self._token_cache.get(phrase)
            if ids is None:
                if len(self._token_cache) > TOKEN_CACHE_SIZE:
                    self._token_cache.clear()
                ids = self._token_cache[phrase] = self._tokenize(phrase)
            if len(ids) + 3 > limit:
                log.warning("phrase %r is %d tokens; cut to fit %d", phrase, len(ids), limit)
                ids = ids[: limit - 3]
            token_ids.append(ids)
        keep = [i for i, ids in enumerate(token_ids) if ids]
        unique, token_ids = [unique[i] for i in keep], [token_ids[i] for i in keep]
        return [
            build_prompt([unique[i] for i in chunk], [token_ids[i] for i in chunk])
            for chunk in chunk_by_length([len(ids) for ids in token_ids], limit)
        ]

    # Backend hooks -------------------------------------------------------------------
    def _tokenize(self, phrase: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Each image as a normalised (3, h, w) tensor, as the model expects it."""
        raise NotImplementedError

    def _forward(
        self, pixels: Sequence[torch.Tensor], chunks: Sequence[PromptChunk]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per row: (queries, text_len) float32 token probabilities and (queries, 4) boxes."""
        raise NotImplementedError


def _batches(
    rows: Sequence[_Row], tensors: dict[int, torch.Tensor], size: int, pad: bool
) -> Iterable[list[_Row]]:
    """Rows grouped by processed image shape (unless ``pad``), ``size`` at a time."""
    groups: dict[Any, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[None if pad else tuple(tensors[row.image].shape)].append(row)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]
