"""The demo models of the quick start: tiny random-weight models under ``VAR_DIR/models``.

``python manage.py make_demo_models`` builds them with the project's own builders (the same
ones the tests use); the run, job and study forms offer the built ones by name, and
``resolve_model`` turns a name into its folder when a form is submitted. They have random
weights: they make every run and job go through its whole flow on a CPU in seconds, and their
outputs mean nothing. ``DEMO_JOB_CONFIG`` holds the training settings that keep a demo job
within a minute or two on two cores.

``check_model_field`` is the form-side check: a demo name or a model spec becomes the spec to
store, or a ``ValueError`` with ``training.models_available``'s one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from training.models_available import ModelNotAvailable, check_model

LABEL = "random weights, for trying the flow"


@dataclass(frozen=True)
class DemoModel:
    name: str
    roles: tuple[str, ...]  # which fields offer it: detector, captioner, clip, m, rm
    what: str
    build: Callable[[Path], Any]

    @property
    def folder(self) -> Path:
        return models_dir() / self.name

    @property
    def label(self) -> str:
        return f"{self.name} ({self.what}, {LABEL})"

    def is_built(self) -> bool:
        return (self.folder / "config.json").is_file()


def _detector(folder: Path) -> Any:
    from workers.tiny_models import build_tiny_grounding_dino

    return build_tiny_grounding_dino(folder)


def _captioner(folder: Path) -> Any:
    from workers.tiny_models import build_tiny_blip

    return build_tiny_blip(folder)


def _clip(folder: Path) -> Any:
    from training.stage1.tiny import make_tiny_clip

    return make_tiny_clip(folder)


def _llava(folder: Path) -> Any:
    from training.stage2.tiny import build_tiny_llava

    return build_tiny_llava(folder)


def _rm(folder: Path) -> Any:
    from training.stage2.tiny import build_tiny_text_lm

    return build_tiny_text_lm(folder)


DEMO_MODELS = {
    m.name: m
    for m in (
        DemoModel("demo-detector", ("detector",), "Grounding DINO", _detector),
        DemoModel("demo-captioner", ("captioner",), "BLIP captioner", _captioner),
        DemoModel("demo-clip", ("clip",), "CLIP for Stage-1", _clip),
        DemoModel("demo-llava", ("m",), "LLaVA as M", _llava),
        DemoModel("demo-rm", ("rm",), "text RM", _rm),
    )
}

# Settings that keep a training job on the demo models short on a CPU (each kind: its model
# keys, then the step budget). Applied under what the curator edited in the form.
DEMO_JOB_CONFIG: dict[str, dict[str, Any]] = {
    "stage1": {
        "model": "demo-clip",
        "max_steps": 20,
        "batch_size": 4,
        "warmup_steps": 2,
        "log_every": 1,
        "save_every": 1000,
        "max_text_tokens": 32,  # the tiny CLIP's text positions
        "relation_hidden": 64,
        "num_workers": 0,
        "eval_max_images": 8,
    },
    "stage2_sft": {
        "model": "demo-llava",
        "max_steps": 10,
        "batch_size": 2,
        "grad_accum": 1,
        "warmup_steps": 1,
        "log_every": 1,
        "lora": "false",
        "max_length": 512,
    },
    "rm": {
        "model": "demo-rm",
        "max_steps": 10,
        "batch_size": 2,
        "grad_accum": 1,
        "warmup_steps": 1,
        "log_every": 1,
        "lora": "false",
        "max_length": 512,
    },
    "rl": {
        "model": "demo-llava",
        "rm": "demo-rm",
        "max_steps": 3,
        "batch_size": 2,
        "num_generations": 2,
        "lora": "false",
        "rm_max_new_tokens": 16,
    },
}


# The demo model a training job of each kind starts from (its ``model=``).
JOB_ROLES = {"stage1": "clip", "ablation": "clip", "stage2_sft": "m", "rm": "rm", "rl": "m",
             "hybrid": "m"}  # fmt: skip
# The config keys of a job that name a model to load (hybrid's phases as sft./rl. keys).
JOB_MODEL_KEYS = ("model", "sft.model", "rl.model", "rm", "rl.rm")


def models_dir() -> Path:
    return Path(settings.VAR_DIR) / "models"


def choices(role: str) -> list[tuple[str, str]]:
    """``(name, label)`` of the built demo models a field of ``role`` offers."""
    return [(m.name, m.label) for m in DEMO_MODELS.values() if role in m.roles and m.is_built()]


def resolve_model(spec: str) -> str:
    """A demo model's folder for its name; any other spec unchanged."""
    spec = (spec or "").strip()
    demo = DEMO_MODELS.get(spec)
    return str(demo.folder) if demo is not None else spec


def check_model_field(spec: str, *, role: str, field: str) -> str:
    """The spec to store for a form's model field: a demo name resolved to its folder, checked
    to be loadable (``ValueError`` with the one-line reason when not). Endpoint specs
    (``URL#MODEL``) are left to the endpoint client."""
    resolved = resolve_model(spec)
    demo = DEMO_MODELS.get((spec or "").strip())
    if demo is not None and not demo.is_built():
        raise ValueError(
            f"{field}: the demo model {demo.name} is not built yet; run "
            "`python manage.py make_demo_models`"
        )
    if not resolved or "://" in resolved:
        return resolved
    try:
        check_model(resolved, role=role)
    except ModelNotAvailable as error:
        raise ValueError(str(error)) from None
    return resolved


def check_job_models(config: dict[str, Any]) -> None:
    """``ValueError`` (one line) for the first model key of a full job config that names a model
    that is not there; an RL phase without an RM (``rm_weight`` 0) loads none."""
    for key in JOB_MODEL_KEYS:
        spec = config.get(key)
        if not isinstance(spec, str) or not spec:
            continue
        weight = config.get(key.replace("rm", "rm_weight"), 1.0) if key.endswith("rm") else 1
        if float(weight or 0) > 0:
            check_model_field(spec, role=f"the job's {key}=", field=key)


def demo_job_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with demo names resolved to folders and, when its model is a demo model, the
    kind's short-run settings under whatever ``config`` sets itself."""
    out = {k: resolve_model(v) if isinstance(v, str) and v in DEMO_MODELS else v
           for k, v in config.items()}  # fmt: skip
    demo = DEMO_JOB_CONFIG.get(kind)
    model = str(config.get("model", ""))
    if demo is None or model not in DEMO_MODELS:
        return out
    quick = {k: resolve_model(v) if isinstance(v, str) and v in DEMO_MODELS else v
             for k, v in demo.items()}  # fmt: skip
    return {**quick, **out}
