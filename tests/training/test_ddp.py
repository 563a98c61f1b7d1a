"""DDP on CPU (gloo): the gathered local loss equals the single-process loss on the same global
batch, in value and in the averaged gradients; and torchrun runs the real entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.data.synthetic import write_version
from training.data.version import DatasetVersion
from training.stage1.batching import BatchBuilder
from training.stage1.config import Stage1Config
from training.stage1.losses import Stage1Loss
from training.stage1.train import build_model, load_clip

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forward_losses(model, batch, loss_fn):
    out = model(
        batch.pixel_values,
        batch.input_ids,
        batch.attention_mask,
        batch.boxes,
        batch.region_image,
        batch.region_slot,
        batch.pairs,
    )
    return loss_fn(out, batch)


def setup(model_dir: str, data_dir: str):
    torch.manual_seed(0)
    clip, tokenizer, processor = load_clip(model_dir)
    config = Stage1Config(relation_hidden=32)
    model = build_model(config, clip)
    version = DatasetVersion.open(data_dir, verify=False)
    builder = BatchBuilder(
        version, tokenizer, 64, tuple(processor.image_mean), tuple(processor.image_std)
    )
    records = list(version.stage1_records())[:8]
    return model, builder, records


def ddp_worker(rank: int, world: int, port: int, model_dir: str, data_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, builder, records = setup(model_dir, data_dir)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    # Uneven split (3 + 5 images): ranks also hold different numbers of regions.
    local = builder(records[:3] if rank == 0 else records[3:])
    losses = forward_losses(ddp, local, Stage1Loss(scc_class_weights="inverse_sqrt"))
    losses["loss"].backward()
    values = torch.stack(
        [losses[k].detach() for k in ("loss", "itcl_loss", "rtcl_loss", "scc_loss")]
    )
    dist.all_reduce(values)
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": values / world, "grads": grads}, out)
    dist.destroy_process_group()


def test_the_gathered_local_loss_equals_the_single_process_loss(tiny_clip, tmp_path):
    data = write_version(tmp_path / "v", images=8, shard_size=8)
    out = tmp_path / "ddp.pt"
    mp.spawn(ddp_worker, args=(2, free_port(), str(tiny_clip), str(data), str(out)), nprocs=2)
    ddp = torch.load(out)

    model, builder, records = setup(str(tiny_clip), str(data))
    single = forward_losses(model, builder(records), Stage1Loss(scc_class_weights="inverse_sqrt"))
    single["loss"].backward()
    expected = torch.stack(
        [single[k].detach() for k in ("loss", "itcl_loss", "rtcl_loss", "scc_loss")]
    )
    torch.testing.assert_close(ddp["losses"], expected, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ddp["grads"].keys()
    for name, grad in grads.items():
        # The rows of tokens every caption holds (BOS, position 0) sum many terms that cancel:
        # summed in another order across ranks they differ by float32 rounding (2e-6 on a row
        # whose largest entry is 2.8), and a key bias, whose true gradient is 0 (softmax ignores
        # it), is rounding noise alone; so the tolerance follows each tensor's scale, with a floor.
        # A wrong reduction (a sum instead of a mean, a rank's regions lost) is off by far more.
        atol = 1e-5 * max(grad.abs().max().item(), 1.0)
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=atol, msg=name)


def test_torchrun_runs_the_real_entry_point_on_two_processes(tiny_clip, small_version, tmp_path):
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "training",
            "stage1",
            "--data",
            str(small_version),
            "--out",
            str(run),
            f"model={tiny_clip}",
            "batch_size=4",
            "max_steps=2",
            "log_every=1",
            "num_workers=0",
            "holdout_fraction=0.2",
            "device=cpu",
            "warmup_steps=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["loss"] > 0 for line in lines)
    assert (run / "final" / "hf" / "config.json").is_file()
