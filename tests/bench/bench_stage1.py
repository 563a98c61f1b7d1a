"""Stage-1 CPU benchmarks: ``.venv/bin/python -m tests.bench.bench_stage1``.

1. The loss alone: vectorised RTCL + SCC against a per-pair Python-loop reference, at 256
   regions per batch and 20 regions per image (forward + backward). Target >= 50x.
2. A training step of the real loop (model, losses, optimizer) with the tiny CLIP: samples/s.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training.geometry import RELATIONS
from training.stage1.batching import same_image_pairs
from training.stage1.losses import RTCLoss, SCCLoss
from training.stage1.model import RelationPredictor


def loop_rtcl(v, t, ids, scale):
    n = v.shape[0]
    total = v.new_zeros(())
    for i in range(n):
        keep = [j for j in range(n) if j == i or ids[j] != ids[i]]
        v2t = torch.stack([scale * v[i].dot(t[j]) for j in keep])
        t2v = torch.stack([scale * t[i].dot(v[j]) for j in keep])
        own = keep.index(i)
        total = total - (v2t[own] - torch.logsumexp(v2t, 0)) - (t2v[own] - torch.logsumexp(t2v, 0))
    return total / (2 * n)


def loop_scc(g, v, region_image, labels):
    terms = []
    k = 0
    for image in sorted(set(region_image)):
        members = [m for m, r in enumerate(region_image) if r == image]
        for i in members:
            for j in members:
                if i != j:
                    logits = g(v[i][None], v[j][None])[0]
                    terms.append(-torch.log_softmax(logits, 0)[labels[k]])
                    k += 1
    return torch.stack(terms).mean()


def bench_loss(regions: int = 256, per_image: int = 20, dim: int = 768, repeats: int = 3) -> dict:
    torch.manual_seed(0)
    v = F.normalize(torch.randn(regions, dim), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(regions, dim), dim=-1).requires_grad_()
    ids = torch.randint(0, regions // 2, (regions,))
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    region_image = torch.arange(regions) // per_image  # 12 images of 20 and one of 16
    pairs = same_image_pairs(region_image)
    labels = torch.randint(0, len(RELATIONS), (pairs.shape[0],))
    g = RelationPredictor(dim, 512)
    rtcl, scc = RTCLoss(), SCCLoss()

    def fast():
        loss = (
            rtcl(v, t, ids, scale)["rtcl_loss"]
            + scc(g(v[pairs[:, 0]], v[pairs[:, 1]]), labels)["scc_loss"]
        )
        loss.backward()
        return loss

    def slow():
        loss = loop_rtcl(v, t, ids.tolist(), scale) + loop_scc(
            g, v, region_image.tolist(), labels.tolist()
        )
        loss.backward()
        return loss

    torch.testing.assert_close(fast(), slow(), rtol=1e-4, atol=1e-4)
    timings = {}
    for name, fn, n in (("vectorised", fast, repeats * 10), ("loop", slow, 1)):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        timings[name] = (time.perf_counter() - start) / n
    return {
        "regions": regions,
        "regions_per_image": per_image,
        "pairs": int(pairs.shape[0]),
        "dim": dim,
        "vectorised_ms": timings["vectorised"] * 1e3,
        "loop_ms": timings["loop"] * 1e3,
        "speedup": timings["loop"] / timings["vectorised"],
    }


def bench_train_step(steps: int = 120, batch_size: int = 16) -> dict:
    from training.data.synthetic import write_version
    from training.stage1.main import main
    from training.stage1.tiny import make_tiny_clip

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_clip(root / "clip")
        data = write_version(root / "v", images=512, shard_size=128)
        main(
            [
                "--data",
                str(data),
                "--out",
                str(root / "run"),
                f"model={model}",
                f"batch_size={batch_size}",
                f"max_steps={steps}",
                "log_every=20",
                "num_workers=1",
                "eval_every_epoch=false",
                "holdout_fraction=0.05",
            ]
        )
        lines = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = lines[2:]  # the first windows include worker start-up and the shuffle buffer
    return {
        "batch_size": batch_size,
        "samples_per_s": sum(x["samples_per_s"] for x in steady) / len(steady),
        "regions_per_s": sum(x["regions_per_s"] for x in steady) / len(steady),
        "model": "tiny CLIP (64 px, patch 8, width 64, 2 layers), fp32",
    }


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps({"threads": torch.get_num_threads(), "loss": bench_loss()}, indent=2))
    print(json.dumps({"train_step": bench_train_step()}, indent=2))
