"""Stage-1 configuration: one dataclass with help text, presets for the ablations.

``training.config.resolve(Stage1Config, file_values, cli_values)`` makes one: defaults <
preset < ``--config FILE`` (JSON or TOML) < ``key=value`` arguments, then ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from training.config import ConfigError, option


@dataclass
class Stage1Config:
    """Stage-1 pre-training (ITCL + RTCL + SCC); ``PRESETS`` are the loss-term ablations."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Figure 1 of the preprint and the ablations. "_only" presets are literal: the
        # one term alone. itcl_rtcl and itcl_scc keep the global term, which §3.2.2 says is
        # always combined with RTCL: Figure 1's "+RTCL" and "+SCC" bars.
        "full": {"alpha": 1.0, "beta": 0.5, "gamma": 0.2},
        "itcl_only": {"alpha": 1.0, "beta": 0.0, "gamma": 0.0},
        "rtcl_only": {"alpha": 0.0, "beta": 0.5, "gamma": 0.0},
        "scc_only": {"alpha": 0.0, "beta": 0.0, "gamma": 0.2},
        "itcl_rtcl": {"alpha": 1.0, "beta": 0.5, "gamma": 0.0},
        "itcl_scc": {"alpha": 1.0, "beta": 0.0, "gamma": 0.2},
    }

    model: str = option(
        "openai/clip-vit-large-patch14-336",
        "model id or local folder holding a CLIPModel and its tokenizer/image processor",
    )
    preset: str = option(
        "full", "named loss weights applied before other values: " + ", ".join(PRESETS)
    )
    alpha: float = option(1.0, "weight of ITCL, the global image-caption InfoNCE (0 skips it)")
    beta: float = option(0.5, "weight of RTCL, Eq. 1, region-caption InfoNCE (0 skips it)")
    gamma: float = option(0.2, "weight of SCC, Eq. 2, relation cross-entropy (0 skips it)")
    rtcl_reduction: str = option(
        "paper",
        "RTCL scale: 'paper' sums the two directions as Eq. 1 does; 'mean' averages them (CLIP's "
        "convention, half of Eq. 1, so beta weighs it half as much). ITCL is always the mean",
    )
    scc_class_weights: str = option(
        "none", "SCC class weights: 'none', or 'inverse_sqrt' of the class counts of the batch"
    )
    mask_duplicate_captions: bool = option(
        True, "do not use identical caption text as a negative (false-negative masking)"
    )
    epochs: int = option(1, "passes over the training images (one epoch = images / global batch)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: epochs decide)")
    batch_size: int = option(32, "images per micro-batch on each device")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-5, "peak learning rate of the CLIP towers")
    head_lr: float = option(1e-4, "peak learning rate of the region head and relation predictor")
    weight_decay: float = option(0.1, "AdamW weight decay (not on biases, norms, temperature)")
    warmup_steps: int = option(100, "linear warm-up steps before the cosine decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    max_regions_per_image: int = option(20, "keep at most this many regions per image (by score)")
    max_text_tokens: int = option(77, "captions are truncated to this many tokens")
    feature_layer: int = option(
        -2,
        "hidden-state layer whose patch tokens are pooled into region features; -2 is the layer "
        "LLaVA-1.5 feeds its projector, so Stage-1 shapes what Stage-2 sees",
    )
    roi_samples: int = option(4, "bilinear samples per box side in RoIAlign pooling")
    relation_hidden: int = option(512, "hidden width of the relation predictor g")
    holdout_fraction: float = option(0.02, "images held out for evaluation (by key hash)")
    eval_data: str = option("", "a separate version folder to evaluate on instead of a holdout")
    eval_max_images: int = option(1000, "evaluate on at most this many held-out images")
    eval_every_epoch: bool = option(True, "evaluate at the end of each epoch (always at the end)")
    log_every: int = option(10, "optimizer steps between lines of metrics.jsonl")
    save_every: int = option(500, "optimizer steps between checkpoints (always at the end)")
    keep_checkpoints: int = option(2, "step checkpoints kept besides final/")
    halt_at_step: int = option(
        0,
        "stop after this step as if interrupted, keeping the full run's schedule (tests, "
        "preemptible jobs); 0: run to the end",
    )
    resume: bool = option(True, "continue from the latest checkpoint in --out if there is one")
    num_workers: int = option(2, "DataLoader worker processes per device")
    shuffle_buffer: int = option(256, "samples in the shuffle buffer of each worker")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (torchrun sets the local rank)")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32")
    seed: int = option(0, "seed for initialisation and data order")

    def weights(self) -> dict[str, float]:
        return {"itcl": self.alpha, "rtcl": self.beta, "scc": self.gamma}

    def validate(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise ConfigError("alpha, beta and gamma must be >= 0")
        if self.alpha == self.beta == self.gamma == 0:
            raise ConfigError("alpha, beta and gamma are all 0: nothing to train")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if self.rtcl_reduction not in ("paper", "mean"):
            raise ConfigError("rtcl_reduction is 'paper' or 'mean'")
        if self.scc_class_weights not in ("none", "inverse_sqrt"):
            raise ConfigError("scc_class_weights is 'none' or 'inverse_sqrt'")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError("precision is auto, bf16 or fp32")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError("holdout_fraction must be in [0, 1)")


# Keys that may change when a run is resumed; anything else must match the run's config.json.
RESUMABLE_CHANGES = {
    "epochs",
    "max_steps",
    "log_every",
    "save_every",
    "keep_checkpoints",
    "num_workers",
    "device",
    "eval_every_epoch",
    "eval_max_images",
    "resume",
    "halt_at_step",
}
