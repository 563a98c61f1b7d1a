"""Stage-2 RL of M with the RM as reward (preprint §3.3.3, "Reinforcement Learning").

``python -m training rl --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value ...]``

- The policy is M, a LLaVA-style model (``AutoModelForImageTextToText``): a hub id, a folder,
  an SFT run's ``final/`` (a LoRA adapter folder is merged first, see ``prepare_policy``).
- Prompts are (I, Q, A_k, F_k): ``prompts.revision_prompt`` as the user turn of M's own chat
  template with the image; completions are A_{k+1}. Rows come from ``stage2/sft.jsonl``
  (``prompts=sft``), from ``stage2/rl_prompts.jsonl`` as first answers A_0 to Q
  (``prompts=rl_prompts``), or both.
- The reward is ``rewards.RMReward`` (the RM judges (I, Q, A_{k+1}); ``rm=`` is a local folder
  or ``URL#MODEL`` of an OpenAI-compatible endpoint) plus the format and length terms, weighted
  by ``rm_weight``, ``format_weight`` and ``length_weight`` (a weight of 0 drops the term).
- The optimiser is TRL's ``GRPOTrainer`` (TRL 1.x has no PPO): ``num_generations`` samples per
  prompt, group-normalised advantages, and a KL penalty ``beta`` to the reference model, which
  TRL loads from the policy's own starting weights, i.e. the SFT model in a hybrid run. With
  ``lora=true`` only the language model gets adapters and the reference is the same weights
  with the adapters switched off.

A run directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per
logging step: step, loss, reward and each reward term, kl, lr, throughput; the web app draws
its curves from it), ``checkpoints/`` (TRL's, for ``resume``) and ``final/`` (model + processor,
``from_pretrained``-loadable, with ``fgam_run.json`` provenance).

The keys are ``config.RLConfig``'s, the dataset comes from ``rl_data``, the metrics file from
``rl_metrics``, the rewards from ``rewards``; ``python -m training hybrid`` (SFT then RL, the
Figure 2 presets) is ``hybrid``, which calls ``train_rl`` here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import ConfigError, command_parser, help_text, resolve_args
from training.models_available import check_model
from training.runtime import latest_checkpoint, truncate_metrics
from training.stage2.config import RLConfig
from training.stage2.prompts import prompt_versions
from training.stage2.rl_data import build_dataset, drop_long_prompts
from training.stage2.rl_metrics import metrics_callback

# ---------------------------------------------------------------------------------------------
# The policy and the rewards.


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process): the one that writes files
    before the trainer (and its process group) exists."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _wait_for(path: Path, timeout_s: float = 3600.0) -> None:
    """Other ranks wait for rank 0 to publish ``path`` (written to a temp name, renamed)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s (rank 0 failed?)")
        time.sleep(1.0)


def _is_adapter(spec: str) -> bool:
    return (Path(spec) / "adapter_config.json").is_file()


def prepare_policy(config: RLConfig, out: Path) -> str:
    """The folder or id RL starts from, which TRL also loads the KL reference from (the
    policy's ``_name_or_path``). When that is not simply ``model`` (a LoRA adapter folder from
    an SFT run, or a Stage-1 ``vision_tower`` to put into M), the starting weights are built
    once and written to ``out/policy-init``, so the reference is exactly the starting policy."""
    spec = config.model
    if not _is_adapter(spec) and not config.vision_tower:
        # An absolute folder, so a LoRA adapter written later names a base that resolves.
        return str(Path(spec).resolve()) if Path(spec).is_dir() else spec
    merged = out / "policy-init"
    if not is_main_process():
        _wait_for(merged / "config.json")
    if (merged / "config.json").is_file():
        return str(merged.resolve())
    import torch

    from training.stage2.local import load_model_and_processor
    from training.stage2.sft import replace_vision_tower

    model, processor, vision = load_model_and_processor(
        spec,
        device=torch.device("cpu"),
        dtype=torch.bfloat16 if _bf16(config) else torch.float32,
    )
    if not vision:
        raise ConfigError(f"model={spec!r}: the policy must be a vision-language model")
    if config.vision_tower:
        replace_vision_tower(model, config.vision_tower)
    tmp = out / "policy-init.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(merged)
    return str(merged.resolve())


def build_rewards(
    config: RLConfig, samples_path: Path | None = None
) -> tuple[list[Any], list[float], list[Any]]:
    """``(reward functions, their weights, generators to close)``; weight-0 terms are left out,
    which is how the ablations run. The RM term appends judged samples to ``samples_path``."""
    from training.stage2.generators import is_endpoint_spec, make_generator
    from training.stage2.rewards import LengthReward, RMReward, format_reward

    funcs: list[Any] = []
    weights: list[float] = []
    generators: list[Any] = []
    if config.rm_weight > 0:
        options: dict[str, Any] = {
            "max_new_tokens": config.rm_max_new_tokens,
            "vision": config.rm_vision,  # a vision model used as a text RM gets no image
        }
        if not is_endpoint_spec(config.rm):
            options["device"] = config.rm_device
        rm = make_generator(config.rm, **options)
        generators.append(rm)
        funcs.append(
            RMReward(
                rm,
                accept=config.rm_accept,
                reject=config.rm_reject,
                concurrency=config.rm_concurrency,
                max_new_tokens=config.rm_max_new_tokens,
                on_error=config.rm_on_error,
                samples_path=samples_path,
                samples_per_call=config.log_samples,
            )
        )
        weights.append(config.rm_weight)
    if config.format_weight > 0:
        funcs.append(format_reward)
        weights.append(config.format_weight)
    if config.length_weight > 0:
        funcs.append(LengthReward(target=config.length_target))
        weights.append(config.length_weight)
    return funcs, weights, generators


# ---------------------------------------------------------------------------------------------
# The run.


def _use_cuda(config: RLConfig) -> bool:
    import torch

    if config.device.startswith("cuda"):
        return True
    return config.device == "auto" and torch.cuda.is_available()


def _bf16(config: RLConfig) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and _use_cuda(config))


def pin_cuda_device(device: str) -> None:
    """``device=cuda:N`` outside torchrun: make GPU N the only visible one (accelerate then
    uses it as cuda:0). Must run before CUDA is initialised."""
    import os

    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]


def grpo_args(config: RLConfig, out: Path) -> Any:
    """TRL's ``GRPOConfig`` for this run (CPU: ``use_cpu``, no gradient checkpointing)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out / "checkpoints"),
        use_cpu=not _use_cuda(config),
        bf16=_bf16(config),
        report_to="none",
        activation_checkpointing=config.gradient_checkpointing,  # the new name of the flag
        dataloader_num_workers=config.num_workers,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        learning_rate=config.lr,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        max_steps=config.max_steps or -1,  # -1: the epochs decide, as in Stage2Common
        logging_steps=config.log_every,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=config.keep_checkpoints,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,  # the reward columns must reach the reward functions
        disable_tqdm=True,
    )


def load_policy(spec: str, config: RLConfig) -> tuple[Any, Any, bool]:
    """``(policy model, processor, lora on)``. As in SFT: bf16 base weights under LoRA on GPU,
    fp32 master weights for full tuning (TRL autocasts to bf16); the CLIP tower frozen unless
    ``train_vision_tower``. The processor pads on the left, as generation needs."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from training.stage2.sft import count_parameters, wants_lora

    check_model(spec, role="the RL policy (model=)")
    model_config = AutoConfig.from_pretrained(spec)
    if getattr(model_config, "vision_config", None) is None:
        raise ConfigError(f"model={spec!r}: the policy must be a vision-language model (LLaVA)")
    with torch.device("meta"):  # the size decides lora=auto, without loading weights
        lora = wants_lora(
            config, count_parameters(AutoModelForImageTextToText.from_config(model_config))
        )
    dtype = torch.bfloat16 if (lora and _bf16(config)) else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(spec, dtype=dtype)
    if not config.train_vision_tower:
        for name, param in model.named_parameters():
            if "vision_tower" in name:
                param.requires_grad_(False)
    processor = AutoProcessor.from_pretrained(spec, padding_side="left")
    return model, processor, lora


def lora_config(config: RLConfig) -> Any:
    """Adapters on the language model's projections only (``lora_target``, never the vision
    tower), as SFT does."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target,
        task_type="CAUSAL_LM",
    )


def save_final(
    trainer: Any, processor: Any, out: Path, provenance: dict[str, Any], *, merge_lora: bool
) -> Path:
    """Write ``out/final`` (model + processor + ``fgam_run.json``), atomically by rename. A
    LoRA run writes its adapter (its base is the starting policy) unless ``merge_lora``."""
    from accelerate.utils import is_peft_model

    model = trainer.accelerator.unwrap_model(trainer.model)
    if is_peft_model(model) and merge_lora:
        model = model.merge_and_unload()
    final, tmp = out / "final", out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "fgam_run.json").write_text(json.dumps(provenance, indent=2) + "\n", "utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def train_rl(
    config: RLConfig,
    data: str | Path,
    out: str | Path,
    *,
    step_offset: int = 0,
    write_config: bool = True,
) -> dict[str, Any]:
    """Run GRPO as ``config`` says on the version at ``data``, into the run folder ``out``;
    return the last metrics line. ``step_offset`` is added to the logged steps and
    ``write_config=False`` leaves ``config.json`` alone (a hybrid run keeps one config and one
    metrics file for both phases)."""
    import asyncio

    from trl import GRPOTrainer

    from training.data.version import DatasetVersion
    from training.stage2.generators import close_all

    out = Path(out)
    version = DatasetVersion.open(data)  # a bad --data fails before anything is written
    dataset = build_dataset(version, config)
    out.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    if write_config and main:
        (out / "config.json").write_text(
            json.dumps(dataclasses.asdict(config), indent=2) + "\n", "utf-8"
        )
    policy = prepare_policy(config, out)
    model, processor, use_lora = load_policy(policy, config)
    dataset, dropped = drop_long_prompts(dataset, processor, config)
    if dropped:
        print(
            f"rl: left out {dropped} of {dropped + len(dataset)} prompts longer than "
            f"max_length - max_new_tokens = {config.max_length - config.max_new_tokens} tokens",
            file=sys.stderr,
        )
    funcs, weights, generators = build_rewards(config, out / "samples.jsonl")
    args = grpo_args(config, out)
    args.reward_weights = weights
    metrics = out / "metrics.jsonl"
    resume = latest_checkpoint(out, "checkpoint") if config.resume else None
    if main:
        resumed_at = int(resume.name.rsplit("-", 1)[1]) if resume else 0
        truncate_metrics(metrics, step_offset + resumed_at)
        truncate_metrics(out / "samples.jsonl", resumed_at)
    callback = metrics_callback(
        metrics, config.batch_size * config.grad_accum * args.world_size, step_offset=step_offset
    )
    trainer = None
    try:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[callback],
            peft_config=lora_config(config) if use_lora else None,
        )
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        # Endpoint clients were opened on TRL's reward event loop: close them there.
        loop = getattr(trainer, "async_loop", None)
        if loop is not None:
            asyncio.run_coroutine_threadsafe(close_all(*generators), loop).result()
        else:
            asyncio.run(close_all(*generators))
    provenance = {
        "stage": "rl",
        "data_version": version.id,
        "policy_init": policy,
        "rm": config.rm,
        "steps": trainer.state.global_step,
        "prompts": len(dataset),
        "prompts_too_long": dropped,
        "prompt_versions": prompt_versions(),
        "config": dataclasses.asdict(config),
    }
    if trainer.is_world_process_zero():
        save_final(trainer, processor, out, provenance, merge_lora=config.merge_lora)
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
    return json.loads(lines[-1]) if lines else {}


# ---------------------------------------------------------------------------------------------
# Command line.


def rl_main(argv: Sequence[str] | None = None) -> int:
    """``python -m training rl --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value]``."""
    args = command_parser(
        "rl",
        "Stage-2 RL of M with the RM as reward (GRPO, KL to the reference).",
        "config keys (key=value):\n" + help_text(RLConfig),
    ).parse_args(argv)
    try:
        config = resolve_args(RLConfig, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    check_model(config.model, role="the RL policy (model=)")
    if config.rm_weight > 0:
        check_model(config.rm, role="the reward's RM (rm=)")
    pin_cuda_device(config.device)
    from training.data.version import DatasetVersionError

    try:
        result = train_rl(config, args.data, args.out)
    except (ConfigError, DatasetVersionError) as err:  # bad data: name it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
