"""Held-out evaluation: region-text and image-text retrieval, per-class relation accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from training.geometry import RELATIONS
from training.stage1.batching import Stage1Batch


def recall_at_k(sims: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Share of rows whose target column ranks in the top k (ties count against).

    sims: [Q, K], target: [Q] column indices.

    >>> recall_at_k(torch.tensor([[0.9, 0.1], [0.8, 0.7]]), torch.tensor([0, 1]), 1)
    0.5
    """
    if sims.shape[0] == 0:
        return float("nan")
    own = sims.gather(1, target[:, None])  # [Q, 1]
    rank = (sims > own).sum(dim=1)  # [Q]
    return float((rank < k).float().mean())


@torch.no_grad()
def evaluate(
    model: Any,
    batches: Iterable[Stage1Batch],
    device: torch.device,
    autocast: AbstractContextManager[Any] | None = None,
) -> dict[str, float]:
    """Metrics over all held-out batches. Retrieval is over the unique caption texts of the
    held-out set: a region (image) is right when the retrieved text equals its own caption."""
    was_training = model.training
    model.eval()
    region_emb, region_text, image_emb, caption_text = [], [], [], []
    logits, labels = [], []
    text_emb: dict[str, torch.Tensor] = {}
    for batch in batches:
        b = batch.to(device)
        with autocast or nullcontext():
            out = model(
                b.pixel_values,
                b.input_ids,
                b.attention_mask,
                b.boxes,
                b.region_image,
                b.region_slot,
                b.pairs,
            )
        for text, emb in zip(b.texts, out["text_emb"].float().cpu(), strict=True):
            text_emb[text] = emb
        region_emb.append(out["region_emb"].float().cpu())
        region_text += [b.texts[k] for k in b.region_caption_index.tolist()]
        image_emb.append(out["image_emb"].float().cpu())
        caption_text += [b.texts[k] for k in b.caption_index.tolist()]
        logits.append(out["relation_logits"].float().cpu())
        labels.append(b.relation_labels.cpu())
    model.train(was_training)
    metrics: dict[str, float] = {
        "images": float(len(caption_text)),
        "regions": float(len(region_text)),
    }

    def retrieval(queries: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        vocab = sorted(set(texts))
        keys = torch.stack([text_emb[t] for t in vocab]) if vocab else torch.zeros(0, 1)
        target = torch.tensor([vocab.index(t) for t in texts], dtype=torch.long)
        return queries @ keys.T, target

    if region_text:
        sims, target = retrieval(torch.cat(region_emb), region_text)
        metrics["region_text_r1"] = recall_at_k(sims, target, 1)
        metrics["region_text_r5"] = recall_at_k(sims, target, 5)
        metrics["region_text_chance_r1"] = 1 / sims.shape[1]
    if caption_text:
        images = torch.cat(image_emb)  # [N, D]
        sims, target = retrieval(images, caption_text)
        metrics["image_text_r1"] = recall_at_k(sims, target, 1)
        captions = torch.stack([text_emb[t] for t in caption_text])  # [N, D]
        same = torch.tensor([[a == b for b in caption_text] for a in caption_text])  # [N, N]
        best = (captions @ images.T).argmax(dim=1)  # [N]
        metrics["text_image_r1"] = float(same[torch.arange(len(best)), best].float().mean())
    pred = torch.cat(logits).argmax(dim=1) if logits else torch.zeros(0, dtype=torch.long)
    gold = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if gold.numel():
        metrics["relation_acc"] = float((pred == gold).float().mean())
        counts = torch.bincount(gold, minlength=len(RELATIONS))
        metrics["relation_majority_baseline"] = float(counts.max() / counts.sum())
        per_class = []
        for k, name in enumerate(RELATIONS):
            if counts[k] > 0:
                acc = float((pred[gold == k] == k).float().mean())
                metrics[f"relation_acc_{name.replace(' ', '_')}"] = acc
                per_class.append(acc)
        metrics["relation_acc_macro"] = sum(per_class) / len(per_class)
    return metrics
