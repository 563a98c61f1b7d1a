"""A study's plan: the steps (training runs and benchmark runs) its arms need, each once.

``plan_study(spec)`` returns ``Step``s in dependency order: Stage-1 runs, then the runs that put
a Stage-1 tower into M (Stage-2 runs with ``vision_tower=``, and "tower" steps for arms with
no Stage-2), then one bench run per (arm, probe set). A step's config is the full resolved
config of its command; a run folder that does not exist yet is a reference, the string
``"@step:<key>/final"``, which ``resolve_references`` replaces with the real folder (this
module's ``render_commands`` with ``runs_dir/<key[:12]>``, the web app with its job's folder).

Decisions:

- A step's key is the sha256 of (kind, resolved config, keys it needs). Two arms whose steps
  resolve to the same config share one step (its ``arms`` lists both): "full" of Table 2,
  "both" of Figure 1 and "hybrid" of Figure 2 are one Stage-1 run, one hybrid run and one bench
  run per probe set. Since references name keys, a shared Stage-1 step makes its Stage-2 steps
  equal too, and the sharing carries down the chain.
- The arm without Stage-2 ("w/o Stage-2") is scored on M with the Stage-1 tower in place and
  nothing else changed. ``python -m training sft`` cannot do zero steps (``epochs >= 1``,
  ``max_steps=0`` means "epochs decide"), and one SFT step at a tiny learning rate would still
  be training, so a dedicated "tower" step (``python -m training swap-tower``,
  ``training.studies.tower``) loads M, swaps the tower with SFT's own ``replace_vision_tower``
  and saves ``final/``.
- The base arm is benchmarked on ``spec.model`` itself (``model_from`` is ``None``).
- Order is deterministic: by phase, then by the first arm (in the study's order) that uses
  the step, then by probe set.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.studies.spec import (
    BENCH_OPTIONS,
    ArmSpec,
    StudySpec,
    resolve_stage,
    stage_values,
)

STEP_KINDS = ("stage1", "tower", "sft", "rl", "hybrid", "bench")
PHASE = {"stage1": 0, "tower": 1, "sft": 1, "rl": 1, "hybrid": 1, "bench": 2}
# The ``python -m training`` command of each kind.
COMMANDS = {
    "stage1": "stage1",
    "tower": "swap-tower",
    "sft": "sft",
    "rl": "rl",
    "hybrid": "hybrid",
    "bench": "bench",
}
REFERENCE = re.compile(r"@step:([0-9a-f]{64})")


@dataclass(frozen=True)
class Step:
    """One run of the plan. ``config`` is its full resolved config (bench and tower: their
    command's options, ``model`` included); ``needs`` the keys of the steps it reads from;
    ``arms`` the arms that use it; ``probes`` the probe set (bench only); ``model_from`` the
    key of the step whose ``final/`` a bench step scores (``None``: ``config["model"]`` as is,
    the base model)."""

    key: str
    kind: str
    config: dict[str, Any]
    needs: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()
    probes: str | None = None
    model_from: str | None = None

    @property
    def short(self) -> str:
        """The run folder's name: the key's first 12 hex digits."""
        return self.key[:12]


def reference(key: str) -> str:
    """The config value that stands for step ``key``'s final checkpoint."""
    return f"@step:{key}/final"


def step_key(kind: str, config: dict[str, Any], needs: tuple[str, ...]) -> str:
    """sha256 of the kind, the resolved config and the needed keys (canonical JSON)."""
    text = json.dumps(
        {"kind": kind, "config": config, "needs": list(needs)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Planner:
    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.steps: dict[str, Step] = {}
        self.order: list[str] = []

    def add(self, arm: ArmSpec, kind: str, config: dict[str, Any], needs: tuple[str, ...],
            **extra: Any) -> str:  # fmt: skip
        key = step_key(kind, config, needs)
        if key in self.steps:
            step = self.steps[key]
            if arm.name not in step.arms:
                self.steps[key] = replace(step, arms=(*step.arms, arm.name))
        else:
            self.steps[key] = Step(key, kind, config, needs, (arm.name,), **extra)
            self.order.append(key)
        return key

    def model_step(self, arm: ArmSpec) -> str | None:
        """Plan the arm's training steps; the key of the step holding its final model."""
        spec = self.spec
        tower_key = None
        if arm.stage1 is not None:
            config = resolve_stage(arm, "stage1", stage_values(spec, arm, "stage1"))
            tower_key = self.add(arm, "stage1", config, ())
        needs = (tower_key,) if tower_key else ()
        tower = reference(tower_key) if tower_key else ""
        if arm.stage2_kind is not None:
            kind = arm.stage2_kind
            values = stage_values(spec, arm, kind, vision_tower=tower)
            return self.add(arm, kind, resolve_stage(arm, kind, values), needs)
        if tower_key:
            return self.add(arm, "tower", tower_config(spec.model, tower), needs)
        return None

    def bench(self, arm: ArmSpec, model_key: str | None) -> None:
        options = {**BENCH_OPTIONS, **self.spec.settings.get("bench", {})}
        model = reference(model_key) if model_key else self.spec.model
        needs = (model_key,) if model_key else ()
        for probes in self.spec.probe_sets:
            config = {"model": model, "probes": probes, **options}
            self.add(arm, "bench", config, needs, probes=probes, model_from=model_key)


def tower_config(model: str, vision_tower: str) -> dict[str, Any]:
    """The config of a "tower" step (``python -m training swap-tower``)."""
    return {"model": model, "vision_tower": vision_tower}


def plan_study(spec: StudySpec) -> list[Step]:
    """Every step of ``spec``, each once, in dependency order (see the module docstring)."""
    planner = _Planner(spec)
    finals = [(arm, planner.model_step(arm)) for arm in spec.arms]
    for arm, model_key in finals:
        planner.bench(arm, model_key)
    position = {key: i for i, key in enumerate(planner.order)}
    keys = sorted(planner.order, key=lambda k: (PHASE[planner.steps[k].kind], position[k]))
    return [planner.steps[k] for k in keys]


def resolve_references(value: Any, run_dir_of: Callable[[str], str | Path]) -> Any:
    """``value`` (a config, or one value) with each ``@step:<key>`` replaced by
    ``run_dir_of(key)`` (the ``/final`` after it stays).

    >>> key = "ab" * 32
    >>> resolve_references({"vision_tower": reference(key), "lr": 1e-4}, lambda k: "runs/" + k[:4])
    {'vision_tower': 'runs/abab/final', 'lr': 0.0001}
    """
    if isinstance(value, dict):
        return {k: resolve_references(v, run_dir_of) for k, v in value.items()}
    if isinstance(value, str):
        return REFERENCE.sub(lambda m: str(run_dir_of(m.group(1))), value)
    return value


def cli_value(value: Any) -> str:
    """key=value text that ``training.config.coerce`` reads back as the same value.

    >>> cli_value(True), cli_value(2e-05), cli_value("runs/x")
    ('true', '2e-05', 'runs/x')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _defaults(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The defaults of a kind's keys, so commands carry only the keys that differ."""
    import dataclasses

    from training.kinds import KINDS
    from training.stage2.config import RLConfig, SFTConfig

    def as_json(obj: Any) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(obj), default=str))

    if kind == "hybrid":
        return {
            **{f"sft.{k}": v for k, v in as_json(SFTConfig()).items()},
            **{f"rl.{k}": v for k, v in as_json(RLConfig()).items()},
        }
    if kind == "bench":
        return dict(BENCH_OPTIONS)
    if kind == "tower":
        return {}
    return as_json(KINDS[kind]())


def step_argv(
    step: Step,
    *,
    out: str | Path,
    data: str | Path,
    run_dir_of: Callable[[str], str | Path],
    python: str = "python",
) -> list[str]:
    """The command line of ``step``, run folder ``out``, dataset version ``data``; references
    resolved with ``run_dir_of(key)`` (a step's run folder). Training commands carry the keys
    that differ from the defaults (``preset`` always); bench and tower take options."""
    config = resolve_references(step.config, run_dir_of)
    defaults = _defaults(step.kind, step.config)
    head = [python, "-m", "training", COMMANDS[step.kind]]
    if step.kind == "bench":
        args = ["--model", config["model"], "--probes", config["probes"], "--out", str(out)]
        for key, value in config.items():
            if key not in ("model", "probes") and defaults.get(key, object()) != value:
                args += [f"--{key.replace('_', '-')}", cli_value(value)]
        return [*head, *args]
    if step.kind == "tower":
        model, tower = config["model"], config["vision_tower"]
        return [*head, "--model", model, "--vision-tower", tower, "--out", str(out)]
    args = ["--data", str(data), "--out", str(out)]
    for key, value in config.items():
        if key == "preset" or defaults.get(key, object()) != value:
            args.append(f"{key}={cli_value(value)}")
    return [*head, *args]


def render_commands(
    steps: list[Step], *, runs_dir: str | Path, version_dir: str | Path, python: str = "python"
) -> list[str]:
    """One shell command per step (quoted for ``sh``), run folders ``runs_dir/<key[:12]>``."""
    runs = Path(runs_dir)

    def run_dir_of(key: str) -> Path:
        return runs / key[:12]

    commands = []
    for step in steps:
        argv = step_argv(
            step, out=run_dir_of(step.key), data=version_dir, run_dir_of=run_dir_of, python=python
        )
        commands.append(shlex.join(argv))
    return commands
