"""Stage-2 configuration: SFT of M (``SFTConfig``), RM training (``RMConfig``) and the keys
every Stage-2 training command shares (``Stage2Common``, which ``RLConfig`` builds on).

Resolution and checking are ``training.config``'s: defaults < ``--config FILE`` < key=value,
unknown keys rejected with close matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.config import ConfigError, build, help_text, option, to_dict

DEFAULT_M = "llava-hf/llava-1.5-7b-hf"
DEFAULT_RM = "Qwen/Qwen2.5-3B-Instruct"

# LoRA adapts the language model's attention and MLP projections only. Names like q_proj also
# exist in the CLIP vision tower (NOTES-ML), so the match is a regex that excludes it and the
# multimodal projector; peft full-matches a string target against each module's name.
LANGUAGE_MODEL_PROJECTIONS = (
    r"^(?!.*(vision_tower|vision_model|multi_modal_projector)).*"
    r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
)
LORA_AUTO_MIN_PARAMS = 1_000_000_000  # lora=auto turns LoRA on from 1B parameters


@dataclass
class Stage2Common:
    """Keys shared by ``sft``, ``rm``, ``rl`` and ``hybrid``."""

    model: str = option(DEFAULT_M, "model id or local folder (from_pretrained)")
    epochs: int = option(1, "passes over the training rows")
    max_steps: int = option(0, "stop after this many optimizer steps (0: epochs decide)")
    batch_size: int = option(4, "rows per micro-batch on each device")
    grad_accum: int = option(4, "micro-batches per optimizer step")
    lr: float = option(2e-4, "peak learning rate (2e-4 suits LoRA; use ~2e-5 for full tuning)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_steps: int = option(10, "linear warm-up steps before the cosine decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    max_length: int = option(
        2048, "most tokens per row (image tokens included); longer targets are cut, counted"
    )
    lora: str = option("auto", "LoRA adapters: true, false, or auto (on from 1B parameters)")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input")
    lora_target: str = option(
        LANGUAGE_MODEL_PROJECTIONS,
        "regex over module names that get adapters (default: the language model's projections, "
        "never the vision tower)",
    )
    merge_lora: bool = option(
        False, "write final/ as merged full weights instead of a small adapter folder"
    )
    gradient_checkpointing: bool = option(False, "trade compute for memory (large models)")
    num_workers: int = option(0, "DataLoader worker processes per device")
    log_every: int = option(10, "optimizer steps between lines of metrics.jsonl")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (torchrun sets the local rank)")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32")
    seed: int = option(0, "seed for initialisation (LoRA) and data order")


@dataclass
class SupervisedCommon(Stage2Common):
    """Keys of the two supervised commands, ``sft`` and ``rm``."""

    holdout_fraction: float = option(
        0.0,
        "trajectories held out to report eval_loss at each epoch end and at the end (by a "
        "stable hash of the trajectory id); 0: no evaluation",
    )


@dataclass
class SFTConfig(SupervisedCommon):
    """SFT of the MLLM M on ``stage2/sft.jsonl`` (Eq. 7): (I, Prompt(Q, A_k, F_k)) -> A*_{k+1}."""

    vision_tower: str = option(
        "",
        "replace M's vision tower with a Stage-1 checkpoint: a Stage-1 run folder, its final/ "
        "or checkpoints/step-N folder, or any CLIPModel/CLIPVisionModel folder",
    )
    train_vision_tower: bool = option(
        False, "also train the vision tower in full tuning (LLaVA-1.5 keeps it frozen)"
    )


@dataclass
class RMConfig(SupervisedCommon):
    """SFT of the rectification module on ``stage2/rm.jsonl``: (I?, Q, A_k, evidence) -> F_k."""

    model: str = option(DEFAULT_RM, "model id or local folder of the RM (a smaller instruct model)")
    rm_vision: bool = option(
        False, "give the RM the image too (the model must be image-text-to-text)"
    )


def validate(config: Stage2Common) -> None:
    """Raise ``ConfigError`` naming the key of a value that cannot work."""
    if config.lora not in ("auto", "true", "false"):
        raise ConfigError(f"lora={config.lora!r}: one of auto, true, false")
    if config.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision={config.precision!r}: one of auto, bf16, fp32")
    for key in ("batch_size", "grad_accum", "epochs", "lora_r", "log_every"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be >= 1")
    if config.max_steps < 0 or config.warmup_steps < 0:
        raise ConfigError("max_steps and warmup_steps must be >= 0")
    if config.lr <= 0:
        raise ConfigError("lr must be > 0")
    if config.max_length < 16:
        raise ConfigError("max_length must be >= 16")
    if not 0 <= getattr(config, "holdout_fraction", 0.0) < 1:
        raise ConfigError("holdout_fraction must be in [0, 1)")


def resolve(cls: type, file_values: dict[str, Any], cli_values: dict[str, Any]) -> Any:
    """A validated config of ``cls`` from a config file's values and key=value arguments."""
    config: Stage2Common = build(cls, file_values, cli_values)
    validate(config)
    return config


__all__ = [
    "DEFAULT_M",
    "DEFAULT_RM",
    "LANGUAGE_MODEL_PROJECTIONS",
    "LORA_AUTO_MIN_PARAMS",
    "ConfigError",
    "RMConfig",
    "SFTConfig",
    "Stage2Common",
    "SupervisedCommon",
    "help_text",
    "resolve",
    "to_dict",
    "validate",
]
