"""The Stage-1 training loop: DDP, bf16 autocast, gradient accumulation, checkpoints, resume.

A run directory holds::

    config.json              the resolved config
    metrics.jsonl            one line per logging step (the web app streams it)
    eval.jsonl               one line per evaluation (each epoch end and the end)
    checkpoints/step-NNNNNNNN/
        hf/                  CLIPModel.save_pretrained + tokenizer + image processor
        heads.pt             region head and relation predictor g
        trainer_state.pt     step, optimizer, scheduler, RNG states
    final/                   the same layout at the end, plus eval.json
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from training import distributed as distr
from training.config import ConfigError, to_dict
from training.data.version import DatasetVersion, Stage1Stream, key_in_holdout
from training.runtime import (
    Runtime,
    cosine_with_warmup,
    latest_checkpoint,
    setup_runtime,
    truncate_metrics,
)
from training.stage1.batching import BatchBuilder, Stage1Batch
from training.stage1.config import RESUMABLE_CHANGES, Stage1Config
from training.stage1.evaluate import evaluate
from training.stage1.losses import Stage1Loss
from training.stage1.model import RegionCLIP

TERMS = ("itcl_loss", "rtcl_loss", "scc_loss")

log = logging.getLogger(__name__)


def load_clip(path: str) -> tuple[Any, Any, Any]:
    """CLIPModel, tokenizer and image processor from a model id or a local folder."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    from training.models_available import check_model

    check_model(path, role="Stage-1 CLIP (model=)")
    clip = CLIPModel.from_pretrained(path)
    return clip, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


def build_model(config: Stage1Config, clip: Any) -> RegionCLIP:
    return RegionCLIP(
        clip,
        feature_layer=config.feature_layer,
        roi_samples=config.roi_samples,
        relation_hidden=config.relation_hidden,
    )


def make_optimizer(model: RegionCLIP, config: Stage1Config) -> torch.optim.Optimizer:
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = name.startswith(("region_head", "relation_head"))
        no_decay = param.ndim < 2 or "logit_scale" in name or "norm" in name
        key = (config.head_lr if head else config.lr, 0.0 if no_decay else config.weight_decay)
        groups.setdefault(key, []).append(param)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    )


def train_keys(version: DatasetVersion, holdout: float) -> int:
    import tarfile

    count = 0
    for shard in version.shards():
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name.endswith(".json"):
                    count += not key_in_holdout(name.partition(".")[0], holdout)
    return count


def check_resumable(out: Path, config: Stage1Config) -> None:
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    now = to_dict(config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        raise ConfigError(
            f"{out}/config.json differs in {', '.join(changed)}: resuming must continue the same "
            "run (use another --out, or resume=false to start over there)"
        )


def text_token_limit(requested: int, clip: Any, *, announce: bool) -> int:
    """``max_text_tokens`` clamped to the text tower's ``max_position_embeddings`` (77 for
    OpenAI CLIP): a longer caption would crash its position embedding. Said once, on the main
    rank, when it clamps; config.json keeps the value asked for."""
    limit = int(clip.config.text_config.max_position_embeddings)
    if requested <= limit:
        return requested
    if announce:
        log.warning(
            "max_text_tokens=%d is more than the text model's max_position_embeddings=%d: "
            "captions are truncated to %d tokens",
            requested,
            limit,
            limit,
        )
    return limit


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    model: RegionCLIP,
    tokenizer: Any,
    processor: Any,
    config: Stage1Config,
    trainer_state: dict[str, Any] | None,
) -> None:
    """Write to a temporary folder and rename, so a crash never leaves half a checkpoint."""
    from training.geometry import RELATIONS

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.clip.save_pretrained(tmp / "hf")
    tokenizer.save_pretrained(tmp / "hf")
    processor.save_pretrained(tmp / "hf")
    heads = {**model.heads_state_dict(), "relations": list(RELATIONS), "config": to_dict(config)}
    torch.save(heads, tmp / "heads.pt")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def train(config: Stage1Config, data: str | Path, out: str | Path) -> dict[str, Any]:
    """Run (or continue) Stage-1 training into ``out``; returns the final evaluation."""
    out = Path(out)
    rt = setup_runtime(config.device, config.precision)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    version = DatasetVersion.open(data, verify=rt.main)
    resume_from = (
        latest_checkpoint(out, "step", marker="trainer_state.pt") if config.resume else None
    )
    if resume_from is not None:
        check_resumable(out, config)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n", "utf-8")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    clip, tokenizer, processor = load_clip(str(resume_from / "hf") if resume_from else config.model)
    model = build_model(config, clip)
    if resume_from is not None:
        model.load_heads_state_dict(torch.load(resume_from / "heads.pt", weights_only=False))
    model.to(rt.device)

    per_step = config.batch_size * config.grad_accum * rt.world_size
    steps_per_epoch = max(1, train_keys(version, config.holdout_fraction) // per_step)
    total_steps = config.max_steps if config.max_steps > 0 else config.epochs * steps_per_epoch
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, config.warmup_steps, peak_in_warmup=False)
    )
    step = 0
    if resume_from is not None:
        state = torch.load(resume_from / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        set_rng_state(state["rng"][rt.rank] if rt.rank < len(state["rng"]) else state["rng"][0])
    if rt.main:
        for name in ("metrics.jsonl", "eval.jsonl"):
            truncate_metrics(out / name, step)

    vision = clip.config.vision_config
    text_tokens = text_token_limit(config.max_text_tokens, clip, announce=rt.main)
    builder = BatchBuilder(
        version,
        tokenizer,
        vision.image_size,
        tuple(processor.image_mean),
        tuple(processor.image_std),
        config.max_regions_per_image,
        text_tokens,
    )
    stream = Stage1Stream(
        version,
        config.batch_size,
        builder,
        rank=rt.rank,
        world_size=rt.world_size,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        holdout_fraction=0.0 if config.eval_data else config.holdout_fraction,
        skip_batches=step * config.grad_accum,
    )
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=rt.device.type == "cuda",
    )
    weights = config.weights()
    loss_fn = Stage1Loss(
        config.alpha,
        config.beta,
        config.gamma,
        mask_duplicates=config.mask_duplicate_captions,
        scc_class_weights=config.scc_class_weights,
        rtcl_reduction=config.rtcl_reduction,
    )
    need = {
        "need_image": weights["itcl"] > 0,
        "need_regions": weights["rtcl"] > 0 or weights["scc"] > 0,
        "need_pairs": weights["scc"] > 0,
    }
    need_text = weights["itcl"] > 0 or weights["rtcl"] > 0
    wrapped: Any = model
    if rt.world_size > 1:
        wrapped = DistributedDataParallel(
            model,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=min(weights.values()) == 0 or config.feature_layer != -1,
        )

    def run_eval(final: bool) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if rt.main:
            batches = eval_batches(config, version, builder)
            metrics = evaluate(model, batches, rt.device, rt.autocast())
            line = {"step": step, "epoch": step / steps_per_epoch, "final": final, **metrics}
            with (out / "eval.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        if rt.world_size > 1:
            dist.barrier()
        return metrics

    def checkpoint(folder: Path, with_state: bool) -> None:
        rngs = gather_rng(rt)  # a collective: every rank takes part
        if rt.main:
            state = None
            if with_state:
                state = {
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rngs,
                }
            folder.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(folder, model, tokenizer, processor, config, state)
            prune_checkpoints(out, config.keep_checkpoints)
        if rt.world_size > 1:
            dist.barrier()

    model.train()
    data_iter = iter(loader)
    stop_at = min(total_steps, config.halt_at_step) if config.halt_at_step > 0 else total_steps
    window = Window()
    while step < stop_at:
        for micro in range(config.grad_accum):
            batch: Stage1Batch = next(data_iter).to(rt.device)
            sync = micro == config.grad_accum - 1 or rt.world_size == 1
            with nullcontext() if sync else wrapped.no_sync(), rt.autocast():
                out_t = wrapped(
                    batch.pixel_values,
                    batch.input_ids if need_text else None,
                    batch.attention_mask if need_text else None,
                    batch.boxes,
                    batch.region_image,
                    batch.region_slot,
                    batch.pairs,
                    **need,
                )
            losses = loss_fn(out_t, batch)
            (losses["loss"] / config.grad_accum).backward()
            window.add(losses, batch, out_t["logit_scale"], config.grad_accum)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()
        step += 1
        if step % config.log_every == 0 or step == stop_at:
            line = window.flush(step, steps_per_epoch, float(scheduler.get_last_lr()[0]), rt)
            if rt.main:
                with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line) + "\n")
        if config.eval_every_epoch and step % steps_per_epoch == 0 and step < total_steps:
            run_eval(final=False)
        if step % config.save_every == 0 or step == stop_at:
            checkpoint(out / "checkpoints" / f"step-{step:08d}", with_state=True)
    result: dict[str, Any] = {}
    if step >= total_steps:
        result = run_eval(final=True)
        checkpoint(out / "final", with_state=False)
        if rt.main:
            (out / "final" / "eval.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return result


def gather_rng(rt: Runtime) -> list[dict[str, Any]]:
    """RNG states of every rank (each rank restores its own on resume)."""
    state = rng_state()
    if rt.world_size == 1:
        return [state]
    states: list[Any] = [None] * rt.world_size
    dist.all_gather_object(states, state)
    return states


def prune_checkpoints(out: Path, keep: int) -> None:
    done = sorted(
        p
        for p in (out / "checkpoints").glob("step-*")
        if p.is_dir() and not p.name.endswith(".tmp")
    )
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def eval_batches(
    config: Stage1Config, version: DatasetVersion, builder: BatchBuilder
) -> list[Stage1Batch]:
    source = DatasetVersion.open(config.eval_data) if config.eval_data else version
    eval_builder = BatchBuilder(
        source,
        builder.tokenizer,
        builder.image_size,
        builder.image_mean,
        builder.image_std,
        builder.max_regions,
        builder.max_text_tokens,
    )
    stream = Stage1Stream(
        source,
        config.batch_size,
        eval_builder,
        shuffle_buffer=0,
        endless=False,
        holdout_fraction=1.0 if config.eval_data else config.holdout_fraction,
        holdout=True,
    )
    batches, images = [], 0
    for batch in stream:
        if images >= config.eval_max_images:
            break
        batches.append(batch)
        images += batch.num_images
    return batches


class Window:
    """Sums between two logging steps; flushed into one metrics line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.micro = 0
        self.images = 0
        self.regions = 0
        self.scale = 0.0
        self.start = time.perf_counter()

    def add(
        self, losses: dict[str, torch.Tensor], batch: Stage1Batch, scale: torch.Tensor, accum: int
    ) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.micro += 1
        self.images += batch.num_images
        self.regions += batch.num_regions
        self.scale = float(scale.detach())

    def flush(self, step: int, steps_per_epoch: int, lr: float, rt: Runtime) -> dict[str, Any]:
        names = ["loss", *TERMS]
        values = torch.tensor(
            [self.sums.get(n, math.nan) for n in names] + [self.micro, self.images, self.regions],
            dtype=torch.float64,
        )
        values = distr.sum_over_ranks(values.to(rt.device)).cpu()
        elapsed = time.perf_counter() - self.start
        micro = float(values[4])
        line: dict[str, Any] = {"step": step, "epoch": round(step / steps_per_epoch, 4)}
        for k, name in enumerate(names):
            value = float(values[k]) / micro
            line[name] = None if math.isnan(value) else value
        line |= {
            "tau": 1.0 / self.scale if self.scale else None,
            "lr": lr,
            "samples_per_s": float(values[5]) / elapsed,
            "regions_per_s": float(values[6]) / elapsed,
        }
        self.reset()
        return line
