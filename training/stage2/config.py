"""Stage-2 configuration: SFT of M (``SFTConfig``), RM training (``RMConfig``), RL of M with
the RM as reward (``RLConfig``), the keys they share (``Stage2Common``) and the hybrid SFT-then-RL
run of Figure 2 (``HybridConfig``, its ``HYBRID_PRESETS`` and its ``sft.KEY``/``rl.KEY`` split).

Resolution and checking are ``training.config.resolve``'s: defaults < ``--config FILE`` <
key=value, unknown keys rejected with close matches, then each class's ``validate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from training.config import ConfigError, did_you_mean, option, resolve

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

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key of a value that cannot work."""
        if self.lora not in ("auto", "true", "false"):
            raise ConfigError(f"lora={self.lora!r}: one of auto, true, false")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision={self.precision!r}: one of auto, bf16, fp32")
        for key in ("batch_size", "grad_accum", "epochs", "lora_r", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1")
        if self.max_steps < 0 or self.warmup_steps < 0:
            raise ConfigError("max_steps and warmup_steps must be >= 0")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.max_length < 16:
            raise ConfigError("max_length must be >= 16")


@dataclass
class SupervisedCommon(Stage2Common):
    """Keys of the two supervised commands, ``sft`` and ``rm``."""

    holdout_fraction: float = option(
        0.0,
        "trajectories held out to report eval_loss at each epoch end and at the end (by a "
        "stable hash of the trajectory id); 0: no evaluation",
    )

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError("holdout_fraction must be in [0, 1)")


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


RL_PROMPT_SOURCES = ("sft", "rl_prompts", "both")


@dataclass
class RLConfig(Stage2Common):
    """GRPO of the MLLM M with the RM as reward. The shared keys are ``Stage2Common``'s; the
    defaults below differ where RL wants other values (one line per step, a small lr)."""

    batch_size: int = option(
        8, "completions per device per micro-batch; a multiple of num_generations"
    )
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-5, "peak learning rate (RL moves slowly from the SFT weights)")
    warmup_steps: int = option(0, "linear warm-up steps")
    log_every: int = option(1, "optimizer steps between lines of metrics.jsonl")
    rm: str = option(
        "",
        "the reward's rectification module: a local folder / model id (e.g. an RM run's "
        "final/), or URL#MODEL of an OpenAI-compatible endpoint (needed when rm_weight > 0)",
    )
    rm_vision: bool = option(False, "send the image to the RM (a vision RM)")
    rm_max_new_tokens: int = option(128, "longest critique the RM may write")
    rm_concurrency: int = option(16, "RM calls in flight at once (endpoint RMs)")
    rm_on_error: str = option(
        "raise", "when an RM call fails for good: 'raise' stops, 'skip' drops that term"
    )
    rm_device: str = option("auto", "device of a local RM: auto, cpu, cuda, cuda:N")
    rm_weight: float = option(1.0, "weight of the RM reward (0: off)")
    rm_accept: float = option(1.0, "RM reward when the RM answers the stop phrase")
    rm_reject: float = option(-1.0, "RM reward otherwise (the hallucination penalty)")
    format_weight: float = option(0.5, "weight of the format term (0: off)")
    length_weight: float = option(0.0, "weight of the length term (0: off)")
    length_target: int = option(96, "completion tokens allowed before the length penalty")
    prompts: str = option(
        "sft",
        "RL prompts: 'sft' (revisions A_{k+1}, from stage2/sft.jsonl), 'rl_prompts' (first "
        "answers A_0, from stage2/rl_prompts.jsonl) or 'both'",
    )
    max_samples: int = option(0, "use at most this many prompts (0: all)")
    num_generations: int = option(4, "completions sampled per prompt (the GRPO group)")
    max_new_tokens: int = option(128, "longest completion")
    temperature: float = option(1.0, "sampling temperature of the rollouts")
    beta: float = option(
        0.04,
        "KL penalty to the reference, the starting weights (the SFT model in a hybrid run); "
        "0 drops the reference model",
    )
    loss_type: str = option("dapo", "TRL GRPO loss aggregation: grpo, dr_grpo, dapo or bnpo")
    scale_rewards: str = option("group", "advantage scaling: group, batch or none")
    vision_tower: str = option(
        "",
        "start from M with this Stage-1 vision tower (a Stage-1 run, its final/ or any CLIP "
        "folder), as SFT's key of the same name; for RL-only runs from a Stage-1 model",
    )
    train_vision_tower: bool = option(
        False, "also update the CLIP vision tower (full tuning only); LLaVA keeps it frozen"
    )
    log_samples: int = option(
        4, "completions per step written to samples.jsonl with the RM's verdict (0: none)"
    )
    save_every: int = option(50, "optimizer steps between checkpoints (for resume)")
    keep_checkpoints: int = option(2, "checkpoints kept besides final/")
    resume: bool = option(True, "continue from the latest checkpoint in --out if there is one")

    def validate(self) -> None:
        """``Stage2Common``'s checks plus RL's; the message names the key at fault."""
        super().validate()
        if self.prompts not in RL_PROMPT_SOURCES:
            raise ConfigError(f"prompts={self.prompts!r}: one of {', '.join(RL_PROMPT_SOURCES)}")
        if self.rm_weight > 0 and not self.rm:
            raise ConfigError("rm= is required while rm_weight > 0 (a folder, id or URL#MODEL)")
        if min(self.rm_weight, self.format_weight, self.length_weight) < 0:
            raise ConfigError("rm_weight, format_weight and length_weight must be >= 0")
        if self.rm_weight == self.format_weight == self.length_weight == 0:
            raise ConfigError("rm_weight, format_weight and length_weight are all 0: no reward")
        if self.num_generations < 2:
            raise ConfigError("num_generations must be >= 2 (GRPO compares completions in a group)")
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"batch_size={self.batch_size} must be a multiple of "
                f"num_generations={self.num_generations}"
            )
        if self.beta < 0:
            raise ConfigError("beta must be >= 0")
        if self.rm_on_error not in ("raise", "skip"):
            raise ConfigError(f"rm_on_error={self.rm_on_error!r}: one of raise, skip")
        if self.loss_type not in ("grpo", "dr_grpo", "dapo", "bnpo"):
            raise ConfigError(f"loss_type={self.loss_type!r}: one of grpo, dr_grpo, dapo, bnpo")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError(f"scale_rewards={self.scale_rewards!r}: one of group, batch, none")
        if self.lora == "true" and self.train_vision_tower:
            raise ConfigError("train_vision_tower needs full tuning (lora=false)")
        if self.save_every < 1 or self.max_new_tokens < 1:
            raise ConfigError("save_every and max_new_tokens must be >= 1")


# Which phases each preset of the hybrid command runs (preprint §4.5, Figure 2). Every preset
# starts from the same model= (the Stage-1 model: a LLaVA, with vision_tower= naming the Stage-1
# CLIP), so the three runs of the comparison differ only in the Stage-2 strategy.
HYBRID_PRESETS: dict[str, tuple[str, ...]] = {
    "hybrid": ("sft", "rl"),
    "sft_only": ("sft",),
    "rl_only": ("rl",),
}


def split_hybrid_keys(values: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(preset, SFT values, RL values)`` from hybrid key=value pairs: ``sft.KEY`` and
    ``rl.KEY`` go to one phase, a bare ``KEY`` to every phase that has it (an error when none
    has), later and prefixed keys winning.

    >>> split_hybrid_keys({"seed": "1", "rl.lr": "1e-6", "sft.lr": "2e-4", "rm": "x"})
    ('hybrid', {'seed': '1', 'lr': '2e-4'}, {'seed': '1', 'rm': 'x', 'lr': '1e-6'})
    """
    sft_keys = {f.name for f in dataclasses.fields(SFTConfig)}
    rl_keys = {f.name for f in dataclasses.fields(RLConfig)}
    preset = str(values.get("preset", "hybrid"))
    if preset not in HYBRID_PRESETS:
        raise ConfigError(f"preset={preset!r}: one of {', '.join(HYBRID_PRESETS)}")
    sft: dict[str, Any] = {}
    rl: dict[str, Any] = {}
    for key, value in values.items():
        if key == "preset" or "." in key:
            continue
        if key not in sft_keys and key not in rl_keys:
            hint = did_you_mean(key, sorted(sft_keys | rl_keys | {"preset"}))
            raise ConfigError(f"unknown config key {key!r}{hint}; use sft.KEY or rl.KEY")
        if key in sft_keys:
            sft[key] = value
        if key in rl_keys:
            rl[key] = value
    for key, value in values.items():
        phase, dot, name = key.partition(".")
        if not dot:
            continue
        if phase not in ("sft", "rl"):
            raise ConfigError(f"{key!r}: a prefixed key is sft.KEY or rl.KEY")
        (sft if phase == "sft" else rl)[name] = value
    return preset, sft, rl


@dataclass
class HybridConfig:
    """``python -m training hybrid``: the preset and one resolved config per phase. Its
    ``PRESETS`` name the phases each preset runs; ``compose`` applies them."""

    PRESETS: ClassVar[dict[str, tuple[str, ...]]] = HYBRID_PRESETS

    preset: str
    # Resolved whatever the preset, because its device= places the run (rl_only included).
    sft: SFTConfig
    rl: RLConfig | None  # None when the preset runs no RL phase

    @classmethod
    def compose(cls, values: dict[str, Any]) -> HybridConfig:
        """The ``training.config.resolve`` hook: split the keys by phase, resolve each phase."""
        preset, sft_values, rl_values = split_hybrid_keys(values)
        sft = resolve(SFTConfig, {}, sft_values)
        rl = resolve(RLConfig, {}, rl_values) if "rl" in HYBRID_PRESETS[preset] else None
        return cls(preset, sft, rl)
