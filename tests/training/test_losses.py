"""Each loss against a slow, direct reference written from the preprint's equations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from training.config import ConfigError
from training.geometry import RELATIONS
from training.stage1.batching import same_image_pairs
from training.stage1.config import Stage1Config
from training.stage1.losses import ITCLoss, RTCLoss, SCCLoss, Stage1Loss
from training.stage1.model import RelationPredictor, roi_align_pool


def reference_infonce(v, t, ids, scale, mask, sum_directions=False):
    """Eq. 1 with the standard text->region denominator, one pair at a time.

    ``sum_directions`` is Eq. 1 as written (-1/B sum of both terms); otherwise the two
    directions are averaged (CLIP), half of it.
    """
    n = v.shape[0]
    total = v.new_zeros(())
    for i in range(n):
        keep = [j for j in range(n) if j == i or not (mask and ids[j] == ids[i])]
        v2t = torch.stack([scale * v[i].dot(t[j]) for j in keep])
        t2v = torch.stack([scale * t[i].dot(v[j]) for j in keep])
        own = keep.index(i)
        total = total - (v2t[own] - torch.logsumexp(v2t, 0)) - (t2v[own] - torch.logsumexp(t2v, 0))
    return total / n if sum_directions else total / (2 * n)


def leaves(n, d, seed, duplicates):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    ids = torch.randint(0, duplicates, (n,), generator=g)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    return v, t, ids, scale


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize(
    ("module", "sum_directions"),
    [
        (RTCLoss, True),  # the default: Eq. 1's scale
        (lambda mask_duplicates: RTCLoss(mask_duplicates, reduction="mean"), False),
        (ITCLoss, False),
    ],
    ids=["rtcl-paper", "rtcl-mean", "itcl"],
)
@pytest.mark.parametrize("mask", [True, False])
def test_contrastive_losses_match_the_equation_in_value_and_gradient(module, sum_directions, mask):
    v, t, ids, scale = leaves(24, 16, seed=3, duplicates=8)  # duplicates: masking matters
    (fast,) = module(mask_duplicates=mask)(v, t, ids, scale).values()
    slow = reference_infonce(v, t, ids.tolist(), scale, mask, sum_directions)
    torch.testing.assert_close(fast, slow)
    for a, b in zip(grads(fast, (v, t, scale)), grads(slow, (v, t, scale)), strict=True):
        torch.testing.assert_close(a, b)


def hand_batch():
    """Two unit region vectors and two captions, 1/tau = 1, so the logits are plain dot products.

    v = [[1, 0], [0, 1]], e = [[1, 0], [0.6, 0.8]]:
    region->text logits [[1, 0.6], [0, 0.8]], text->region logits [[1, 0], [0.6, 0.8]].
    Each -log softmax of the matched pair is log(1 + exp(other - own)):
    log(1 + e^-0.4) = 0.5130153, log(1 + e^-0.8) = 0.3711007 (region->text),
    log(1 + e^-1) = 0.3132617, log(1 + e^-0.2) = 0.5981389 (text->region); sum 1.7955165.
    """
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    return v, e, torch.tensor([0, 1]), torch.tensor(1.0, dtype=torch.float64)


def test_rtcl_has_eq_1_scale_by_default_and_half_of_it_as_the_mean_option():
    batch = hand_batch()
    paper = RTCLoss()(*batch)["rtcl_loss"]
    mean = RTCLoss(reduction="mean")(*batch)["rtcl_loss"]
    itcl = ITCLoss()(*batch)["itcl_loss"]

    assert paper.item() == pytest.approx(1.7955165 / 2, abs=1e-6)  # -1/B * sum of both terms
    assert mean.item() == pytest.approx(1.7955165 / 4, abs=1e-6)
    assert itcl.item() == pytest.approx(1.7955165 / 4, abs=1e-6)  # CLIP: mean of directions


def test_beta_weights_eq_1_as_written_in_the_combined_loss():
    v, e, ids, scale = hand_batch()
    out = {"region_emb": v, "text_emb": e, "logit_scale": scale}
    batch = SimpleNamespace(region_caption_index=torch.tensor([0, 1]), text_ids=ids)

    paper = Stage1Loss(0.0, 0.5, 0.0)(out, batch)["loss"]
    mean = Stage1Loss(0.0, 0.5, 0.0, rtcl_reduction="mean")(out, batch)["loss"]

    assert paper.item() == pytest.approx(0.5 * 1.7955165 / 2, abs=1e-6)
    assert mean.item() == pytest.approx(0.25 * 1.7955165 / 2, abs=1e-6)


def test_an_unknown_rtcl_reduction_is_refused():
    with pytest.raises(ValueError, match="paper, mean"):
        RTCLoss(reduction="sum")
    config = Stage1Config(rtcl_reduction="sum")
    with pytest.raises(ConfigError, match="rtcl_reduction is 'paper' or 'mean'"):
        config.validate()


def test_masking_changes_the_loss_when_captions_repeat():
    v, t, ids, scale = leaves(24, 16, seed=3, duplicates=4)
    masked = RTCLoss(True)(v, t, ids, scale)["rtcl_loss"]
    unmasked = RTCLoss(False)(v, t, ids, scale)["rtcl_loss"]
    assert masked < unmasked


def test_a_batch_where_every_caption_is_identical_has_no_negatives():
    v, t, _, scale = leaves(10, 8, seed=4, duplicates=1)
    ids = torch.zeros(10, dtype=torch.long)
    loss = RTCLoss(True)(v, t, ids, scale)["rtcl_loss"]
    assert loss.item() == 0.0  # each row's softmax holds only its own pair
    assert all(torch.isfinite(g).all() for g in grads(loss, (v, t, scale)))
    unmasked = RTCLoss(False)(v, t, ids, scale)["rtcl_loss"]
    assert math.isfinite(unmasked.item()) and unmasked.item() > 0


def test_no_regions_give_a_zero_loss_that_still_backpropagates():
    v = torch.zeros((0, 8), requires_grad=True)
    t = torch.zeros((0, 8), requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = RTCLoss()(v, t, torch.zeros(0, dtype=torch.long), scale)["rtcl_loss"]
    loss.backward()
    assert loss.item() == 0.0


def reference_scc(g, emb, region_image, boxes_labels):
    """Eq. 2 (as a mean): for each image, every ordered pair i != j of its regions."""
    terms = []
    for image in sorted(set(region_image)):
        members = [k for k, m in enumerate(region_image) if m == image]
        for i in members:
            for j in members:
                if i != j:
                    logits = g(emb[i][None], emb[j][None])[0]
                    terms.append(-torch.log_softmax(logits, 0)[boxes_labels[(i, j)]])
    return torch.stack(terms).mean()


def test_scc_matches_the_equation_in_value_and_gradient():
    torch.manual_seed(0)
    region_image = [0, 0, 0, 1, 2, 2, 2, 2, 3]  # image 1 and 3 have one region: no pairs
    emb = F.normalize(
        torch.randn(len(region_image), 16, dtype=torch.float64), dim=-1
    ).requires_grad_()
    g = RelationPredictor(16, 32).double()
    pairs = same_image_pairs(torch.tensor(region_image))
    labels = torch.randint(0, len(RELATIONS), (pairs.shape[0],))
    label_of = {tuple(p): int(y) for p, y in zip(pairs.tolist(), labels, strict=True)}
    fast = SCCLoss()(g(emb[pairs[:, 0]], emb[pairs[:, 1]]), labels)["scc_loss"]
    slow = reference_scc(g, emb, region_image, label_of)
    torch.testing.assert_close(fast, slow)
    params = (emb, *g.parameters())
    for a, b in zip(grads(fast, params), grads(slow, params), strict=True):
        torch.testing.assert_close(a, b)
    assert pairs.shape[0] == 3 * 2 + 4 * 3


def test_g_never_sees_box_coordinates():
    g = RelationPredictor(16, 32)
    assert g.mlp[0].in_features == 4 * 16  # [v_i, v_j, v_i*v_j, v_i-v_j], nothing else


def test_class_weighted_scc_is_the_weighted_mean():
    torch.manual_seed(1)
    logits = torch.randn(30, len(RELATIONS))
    labels = torch.tensor([0] * 20 + [5] * 10)
    ce = F.cross_entropy(logits, labels, reduction="none")
    w = torch.where(labels == 0, 20**-0.5, 10**-0.5)
    expected = (w * ce).sum() / w.sum()
    torch.testing.assert_close(SCCLoss("inverse_sqrt")(logits, labels)["scc_loss"], expected)


def test_images_with_zero_or_one_region_have_no_pairs_and_zero_scc():
    assert same_image_pairs(torch.tensor([0, 1, 2])).shape == (0, 2)
    assert same_image_pairs(torch.zeros(0, dtype=torch.long)).shape == (0, 2)
    g = RelationPredictor(8, 16)
    emb = torch.randn(3, 8, requires_grad=True)
    pairs = same_image_pairs(torch.tensor([0, 1, 2]))
    loss = SCCLoss()(g(emb[pairs[:, 0]], emb[pairs[:, 1]]), torch.zeros(0, dtype=torch.long))
    assert loss["scc_loss"].item() == 0.0
    loss["scc_loss"].backward()


class FakeBatch:
    def __init__(self, n_images, regions_per_image, seed=0):
        g = torch.Generator().manual_seed(seed)
        r = n_images * regions_per_image
        self.caption_index = torch.arange(n_images)
        self.region_caption_index = n_images + torch.arange(r)
        self.text_ids = torch.randint(0, 5, (n_images + r,), generator=g)
        self.region_image = torch.arange(n_images).repeat_interleave(regions_per_image)
        self.pairs = same_image_pairs(self.region_image)
        self.relation_labels = torch.randint(0, len(RELATIONS), (self.pairs.shape[0],), generator=g)
        self.out = {
            "image_emb": F.normalize(torch.randn(n_images, 8, generator=g), dim=-1),
            "text_emb": F.normalize(torch.randn(n_images + r, 8, generator=g), dim=-1),
            "region_emb": F.normalize(torch.randn(r, 8, generator=g), dim=-1),
            "relation_logits": torch.randn(self.pairs.shape[0], len(RELATIONS), generator=g),
            "logit_scale": torch.tensor(14.0),
        }


def test_the_total_is_the_weighted_sum_and_zero_weights_are_skipped():
    batch = FakeBatch(4, 3)
    full = Stage1Loss(1.0, 0.5, 0.2)(batch.out, batch)
    expected = full["itcl_loss"] + 0.5 * full["rtcl_loss"] + 0.2 * full["scc_loss"]
    torch.testing.assert_close(full["loss"], expected)
    only = Stage1Loss(0.0, 0.5, 0.0)(batch.out, batch)
    assert set(only) == {"loss", "rtcl_loss"}
    torch.testing.assert_close(only["loss"], 0.5 * full["rtcl_loss"])


def test_one_region_per_image_gives_rtcl_but_no_scc_pairs():
    batch = FakeBatch(6, 1)
    losses = Stage1Loss()(batch.out, batch)
    assert batch.pairs.shape == (0, 2)
    assert losses["scc_loss"].item() == 0.0 and losses["rtcl_loss"].item() > 0


def reference_bilinear(fmap, x, y):
    """Bilinear value of fmap [C, H, W] at normalised (x, y), pixel centres at (k + 0.5) / W,
    clamped at the border (torchvision roi_align, aligned=True, inside the image)."""
    _, h, w = fmap.shape
    px = min(max(x * w - 0.5, 0.0), w - 1.0)
    py = min(max(y * h - 0.5, 0.0), h - 1.0)
    x0, y0 = math.floor(px), math.floor(py)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = px - x0, py - y0
    top = fmap[:, y0, x0] * (1 - ax) + fmap[:, y0, x1] * ax
    bottom = fmap[:, y1, x0] * (1 - ax) + fmap[:, y1, x1] * ax
    return top * (1 - ay) + bottom * ay


@pytest.mark.parametrize("tiny", [False, True])
def test_roi_align_pooling_matches_direct_bilinear_sampling(tiny):
    torch.manual_seed(0)
    fmap = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    if tiny:  # very small boxes: a fraction of a patch
        boxes = torch.tensor(
            [[0.5, 0.5, 0.5001, 0.5001], [0.1, 0.2, 0.1002, 0.2003]], dtype=torch.float64
        )
    else:
        boxes = torch.tensor(
            [[0.0, 0.0, 1.0, 1.0], [0.1, 0.3, 0.45, 0.9], [0.6, 0.05, 0.95, 0.5]],
            dtype=torch.float64,
        )
    region_image = torch.tensor([0, 1, 1][: len(boxes)])
    region_slot = torch.tensor([0, 0, 1][: len(boxes)])
    s = 3
    fast = roi_align_pool(fmap, boxes, region_image, region_slot, samples=s)
    for r, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        points = [
            reference_bilinear(
                fmap[region_image[r]],
                x0 + (a + 0.5) / s * (x1 - x0),
                y0 + (b + 0.5) / s * (y1 - y0),
            )
            for a in range(s)
            for b in range(s)
        ]
        torch.testing.assert_close(fast[r], torch.stack(points).mean(0))
