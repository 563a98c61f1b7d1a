"""Stage-2 supervised training: SFT of the MLLM M (Eq. 7) and of the rectification module.

``python -m training sft --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value ...]``
``python -m training rm  --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value ...]``

A run directory holds::

    config.json     the resolved config (plus what was derived: lora on/off, rows, kind)
    metrics.jsonl   one line per logging step: step, epoch, loss, lr, samples_per_s,
                    tokens_per_s, supervised_tokens (Stage-1's shape, so the job page plots it)
    final/          weights loadable with from_pretrained, with the processor/tokenizer:
                    a peft adapter folder when LoRA was on (unless merge_lora=true, or
                    vision_tower= replaced M's tower: then merged weights), else the
                    full model. ``LocalGenerator.from_pretrained(final)`` loads either.

Why a small trainer of our own rather than TRL's ``SFTTrainer``: the label mask is the
contract this stage is judged on (loss on A*_{k+1} + EOS only), and ``training.stage2.data``
owns it in one readable place for M and the RM alike; the loop is the Stage-1 one (DDP, bf16
autocast, accumulation, the same metrics file), so the web app's job page and torchrun work
unchanged. ``SFTTrainer`` would re-tokenize with its own rules and log through callbacks.

Several GPUs: ``torchrun --nproc-per-node 8 -m training sft --data V --out R ...``; every rank
runs the same command, data is split by ``DistributedSampler``, only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from training.config import ConfigError, command_parser, help_text, resolve_args, to_dict
from training.runtime import Runtime, cosine_with_warmup, setup_runtime
from training.stage2.config import LORA_AUTO_MIN_PARAMS, RMConfig, SFTConfig, Stage2Common

log = logging.getLogger(__name__)


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def wants_lora(config: Stage2Common, parameters: int) -> bool:
    """``lora=auto`` is on from ``LORA_AUTO_MIN_PARAMS`` parameters (a 7B M, a 3B RM).

    >>> from training.stage2.config import SFTConfig
    >>> wants_lora(SFTConfig(lora="auto"), 7_000_000_000), wants_lora(SFTConfig(), 10**6)
    (True, False)
    """
    if config.lora == "auto":
        return parameters >= LORA_AUTO_MIN_PARAMS
    return config.lora == "true"


def apply_lora(model: Any, config: Stage2Common) -> Any:
    """Wrap ``model`` with LoRA adapters on the modules ``config.lora_target`` matches."""
    import re

    from peft import LoraConfig, get_peft_model

    matched = [name for name, _ in model.named_modules() if re.fullmatch(config.lora_target, name)]
    if not matched:
        raise ConfigError(f"lora_target={config.lora_target!r} matches no module of the model")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def stage1_vision_folder(path: str | Path) -> Path:
    """The ``save_pretrained`` folder inside a Stage-1 run, checkpoint or plain CLIP folder."""
    path = Path(path)
    for candidate in (path / "final" / "hf", path / "hf", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise ConfigError(
        f"vision_tower={str(path)!r}: no CLIP config.json in it, its hf/ or final/hf/"
    )


def replace_vision_tower(model: Any, path: str | Path) -> None:
    """Load a Stage-1 CLIP vision tower into M, in place (same architecture required).

    Stage-1 saves a whole ``CLIPModel``; ``CLIPVisionModel.from_pretrained`` reads its vision
    half. Key prefixes differ between the two classes (``vision_model.``), so both sides are
    compared without it, and every tensor must match in name and shape.
    """
    from transformers import CLIPVisionModel

    folder = stage1_vision_folder(path)
    source = CLIPVisionModel.from_pretrained(folder).state_dict()
    tower = model.model.vision_tower if hasattr(model, "model") else model.vision_tower
    target = tower.state_dict()

    def strip(key: str) -> str:
        return key.removeprefix("vision_model.")

    by_name = {strip(k): v for k, v in source.items()}
    missing = [k for k in target if strip(k) not in by_name]
    if missing:
        raise ConfigError(
            f"vision_tower={str(folder)!r} lacks {len(missing)} tensors, e.g. {missing[0]}"
        )
    new_state = {}
    for key, value in target.items():
        loaded = by_name[strip(key)]
        if loaded.shape != value.shape:
            raise ConfigError(
                f"vision_tower={str(folder)!r}: {key} has shape {tuple(loaded.shape)}, "
                f"M expects {tuple(value.shape)}"
            )
        new_state[key] = loaded.to(value.dtype)
    tower.load_state_dict(new_state)


def load_model(config: Stage2Common, runtime: Runtime, *, vision: bool) -> tuple[Any, Any, bool]:
    """``(model, processor or tokenizer, lora on)`` ready to train on ``runtime.device``."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    from training.models_available import check_model

    check_model(config.model, role="the model to train (model=)")
    model_config = AutoConfig.from_pretrained(config.model)
    is_vision = getattr(model_config, "vision_config", None) is not None
    if vision and not is_vision:
        raise ConfigError(f"model={config.model!r} is text-only but the image is required")
    auto_model = AutoModelForImageTextToText if is_vision else AutoModelForCausalLM
    # Peek at the size without weights to decide LoRA, then load in the dtype that suits it:
    # frozen bf16 base weights under LoRA on GPU; fp32 master weights for full tuning.
    with torch.device("meta"):
        parameters = count_parameters(auto_model.from_config(model_config))
    lora = wants_lora(config, parameters)
    dtype = torch.bfloat16 if (lora and runtime.bf16) else torch.float32
    model: Any = auto_model.from_pretrained(config.model, dtype=dtype)
    processor = (AutoProcessor if is_vision else AutoTokenizer).from_pretrained(config.model)
    if isinstance(config, SFTConfig) and config.vision_tower:
        replace_vision_tower(model, config.vision_tower)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if lora:
        model = apply_lora(model, config)
    elif is_vision and not getattr(config, "train_vision_tower", False):
        for parameter in model.model.vision_tower.parameters():
            parameter.requires_grad_(False)  # LLaVA-1.5 fine-tuning keeps CLIP frozen
    model.to(runtime.device)
    return model, processor, lora


def accumulation_groups(loader: Any, size: int) -> Any:
    """The loader's batches in groups of ``size`` (one optimizer step each); the epoch's last
    group may be shorter, so a loader shorter than ``size`` still makes one step."""
    group: list[Any] = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def save_final(model: Any, processor: Any, folder: Path, *, lora: bool, merge: bool) -> None:
    """``final/``: the adapter (LoRA) or full weights, plus the processor/tokenizer, so
    ``from_pretrained(folder)`` (or peft's, for an adapter) and LocalGenerator load it."""
    folder.mkdir(parents=True, exist_ok=True)
    if lora and merge:
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def train_supervised(
    config: Stage2Common,
    examples: list[Any],
    out: str | Path,
    *,
    kind: str,
    vision: bool,
) -> dict[str, Any]:
    """Train ``config.model`` on ``examples`` (see ``training.stage2.data``) into ``out``.

    Returns a summary (steps, first and last logged loss, rows, seconds)."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    from training.stage2.data import (
        SupervisedCollator,
        SupervisedDataset,
        pad_token_id,
        split_holdout,
    )

    out = Path(out)
    runtime = setup_runtime(config.device, config.precision)
    torch.manual_seed(config.seed)
    model, processor, lora = load_model(config, runtime, vision=vision)
    examples, held_out = split_holdout(examples, getattr(config, "holdout_fraction", 0.0))
    if not examples:
        raise ConfigError(f"no training rows for {kind}")
    dataset = SupervisedDataset(examples, processor, vision=vision, max_length=config.max_length)
    evaluator = (
        HeldOutLoss(
            SupervisedDataset(held_out, processor, vision=vision, max_length=config.max_length),
            SupervisedCollator(pad_token_id(processor)),
            config.batch_size,
            runtime,
        )
        if held_out
        else None
    )
    if runtime.world_size > 1:
        sampler: Any = DistributedSampler(dataset, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=SupervisedCollator(pad_token_id(processor)),
        num_workers=config.num_workers,
    )
    steps_per_epoch = max(1, math.ceil(len(loader) / config.grad_accum))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, config.warmup_steps, peak_in_warmup=True)
    )
    wrapped = model
    if runtime.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    if runtime.main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {
            **to_dict(config),
            "kind": kind,
            "vision": vision,
            "lora_enabled": lora,
            "rows": len(examples),
            "held_out_rows": len(held_out),
            "world_size": runtime.world_size,
        }
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n", "utf-8")
        (out / "metrics.jsonl").write_text("", "utf-8")
    window = Window(runtime)
    first_loss: float | None = None
    last_loss: float | None = None
    eval_loss: float | None = None
    step, epoch = 0, 0
    started = time.perf_counter()
    model.train()
    while step < total_steps:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for group in accumulation_groups(loader, config.grad_accum):
            for index, batch in enumerate(group):
                batch = {k: v.to(runtime.device) for k, v in batch.items()}
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
                # DDP all-reduces gradients on the group's last backward only.
                last = index == len(group) - 1
                sync = nullcontext() if last or wrapped is model else wrapped.no_sync()
                with sync:
                    with runtime.autocast():
                        loss = wrapped(**batch).loss
                    (loss / len(group)).backward()
                window.add(float(loss.detach()), batch)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                line = window.flush(step, steps_per_epoch, float(scheduler.get_last_lr()[0]))
                first_loss = line["loss"] if first_loss is None else first_loss
                last_loss = line["loss"]
                if runtime.main:
                    with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(line) + "\n")
                    print(json.dumps(line), file=sys.stderr, flush=True)
            if evaluator is not None and (step % steps_per_epoch == 0 or step == total_steps):
                eval_loss = evaluator(model, step, steps_per_epoch, out)
                model.train()
            if step >= total_steps:
                break
        epoch += 1
    if runtime.main:
        merge = config.merge_lora
        if lora and not merge and isinstance(config, SFTConfig) and config.vision_tower:
            # An adapter names M as its base, so loading it would bring M's own tower back and
            # the Stage-1 tower would be lost: with a replaced tower, final/ is merged weights.
            log.warning("vision_tower= with LoRA: final/ is written as merged full weights")
            merge = True
        save_final(model, processor, out / "final", lora=lora, merge=merge)
    if runtime.world_size > 1:
        dist.barrier()
    return {
        "kind": kind,
        "steps": step,
        "rows": len(examples),
        "first_loss": first_loss,
        "last_loss": last_loss,
        "eval_loss": eval_loss,
        "held_out_rows": len(held_out),
        "truncated_targets": dataset.truncated,
        "lora": lora,
        "seconds": round(time.perf_counter() - started, 3),
        "final": str(out / "final"),
    }


class HeldOutLoss:
    """The loss on held-out rows, averaged over their supervised tokens (all ranks), written to
    ``metrics.jsonl`` as ``eval_loss`` so the job page draws it beside the training loss."""

    def __init__(self, dataset: Any, collator: Any, batch_size: int, runtime: Runtime) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        sampler: Any = (
            DistributedSampler(dataset, shuffle=False) if runtime.world_size > 1 else None
        )
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator
        )
        self.rows = len(dataset)
        self.runtime = runtime

    def __call__(self, model: Any, step: int, steps_per_epoch: int, out: Path) -> float:
        import torch

        from training import distributed as distr

        model.eval()
        totals = torch.zeros(2, dtype=torch.float64)  # [loss x tokens, tokens]
        with torch.no_grad():
            for batch in self.loader:
                batch = {k: v.to(self.runtime.device) for k, v in batch.items()}
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
                with self.runtime.autocast():
                    loss = model(**batch).loss
                # HF's loss is the mean over the batch's supervised tokens (after the shift)
                tokens = int((batch["labels"][:, 1:] != -100).sum())
                totals += torch.tensor([float(loss) * tokens, tokens], dtype=torch.float64)
        totals = distr.sum_over_ranks(totals.to(self.runtime.device)).cpu()
        value = float(totals[0] / max(float(totals[1]), 1.0))
        if self.runtime.main:
            line = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "eval_loss": value,
                "eval_rows": self.rows,
            }
            with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        return value


class Window:
    """Sums between two logging steps, flushed into one metrics line (summed over ranks)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.reset()

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.micro = 0
        self.samples = 0
        self.tokens = 0  # every non-padding token
        self.supervised = 0  # tokens whose label counts
        self.start = time.perf_counter()

    def add(self, loss: float, batch: dict[str, Any]) -> None:
        self.loss_sum += loss
        self.micro += 1
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())
        self.supervised += int((batch["labels"] != -100).sum())

    def flush(self, step: int, steps_per_epoch: int, lr: float) -> dict[str, Any]:
        import torch

        from training import distributed as distr

        values = torch.tensor(
            [self.loss_sum, self.micro, self.samples, self.tokens, self.supervised],
            dtype=torch.float64,
        )
        values = distr.sum_over_ranks(values.to(self.runtime.device)).cpu()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        line = {
            "step": step,
            "epoch": round(step / steps_per_epoch, 4),
            "loss": float(values[0]) / max(float(values[1]), 1.0),
            "lr": lr,
            "samples_per_s": float(values[2]) / elapsed,
            "tokens_per_s": float(values[3]) / elapsed,
            "supervised_tokens": int(values[4]),
        }
        self.reset()
        return line


def _run(command: str, description: str, cls: type, argv: Sequence[str] | None) -> int:
    from training.data.version import DatasetVersion, DatasetVersionError
    from training.models_available import check_model
    from training.stage2 import data

    args = command_parser(
        command,
        description,
        "config keys (key=value):\n" + help_text(cls),
        out_help="run folder (config.json, metrics.jsonl, final/)",
    ).parse_args(argv)
    try:
        config: Stage2Common = resolve_args(cls, args)
        check_model(config.model, role=f"the model to train (model=, {command})")
        version = DatasetVersion.open(args.data)
        if isinstance(config, RMConfig):
            vision = config.rm_vision
            examples = list(data.rm_examples(version, with_image=vision))
        else:
            vision = True
            examples = list(data.sft_examples(version, with_image=True))
        result = train_supervised(config, examples, args.out, kind=command, vision=vision)
    except (ConfigError, DatasetVersionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(result, indent=2))
    return 0


def sft_main(argv: Sequence[str] | None = None) -> int:
    """``python -m training sft``: SFT of M on ``stage2/sft.jsonl`` (loss on A*_{k+1} only)."""
    return _run("sft", "Stage-2 SFT of the MLLM M on stage2/sft.jsonl (Eq. 7).", SFTConfig, argv)


def rm_main(argv: Sequence[str] | None = None) -> int:
    """``python -m training rm``: train the rectification module on ``stage2/rm.jsonl``."""
    return _run("rm", "Train the rectification module (RM) on stage2/rm.jsonl.", RMConfig, argv)
