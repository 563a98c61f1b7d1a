"""A study file (``study.json``): one dataset version, a base M and RM, the arms to run and the
probe sets they are all scored on.

A plain study file::

    {
      "name": "table2-llava7b",
      "version": "exports/v3",                  # a dataset version folder (or the web app's id)
      "model": "llava-hf/llava-1.5-7b-hf",      # the base M every arm starts from
      "rm": "runs/rm-qwen3b/final",             # the RL reward's RM (a folder, id or URL#MODEL)
      "clip": "openai/clip-vit-large-patch14-336",  # Stage-1's starting CLIP (M's tower source)
      "arms": "table2",                         # a preset group (the default), a list of
                                                # groups / arm names / custom arms (ArmSpec)
      "probe_sets": ["probes/pope-v3"],
      "round": null,                            # an evaluation round's name, for the web app
      "base_arm": "base",                       # what deltas and paired tests compare to
                                                # (default: the arm that trains nothing, else
                                                # the first arm)
      "settings": {"stage1": {...}, "sft": {...}, "rl": {...}, "bench": {...}}
    }

``settings`` are config keys applied to every arm of a kind (the run length, the batch size),
under each arm's own keys: an arm's ablation values always win. A hybrid arm takes ``sft`` as
its ``sft.KEY`` and ``rl`` as its ``rl.KEY``. ``bench`` holds the scorer's options
(``BENCH_OPTIONS``).

Decisions:

- ``clip`` defaults to Stage-1's default, ``openai/clip-vit-large-patch14-336``: LLaVA-1.5's own
  tower, so the Stage-1 tower fits M. For another M, name its tower's CLIP here.
- The study owns the keys that tie the arms together: ``model``, ``rm``, ``clip`` and the
  Stage-1 ``vision_tower`` (the plan fills it). An arm or ``settings`` that sets one of them is
  refused, so two arms of one study can never silently start from different models.
- Every arm's config is resolved here with ``training.config.resolve`` against its kind's class,
  so a typo fails when the file is loaded, with one line naming the arm and the key, never
  hours later when the arm's job starts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import ConfigError, did_you_mean, resolve
from training.kinds import KINDS
from training.stage1.config import Stage1Config

STAGE2_KINDS = ("sft", "rl", "hybrid")
SETTINGS_KINDS = ("stage1", "sft", "rl", "bench")
# The scorer's options (``python -m training bench``) a study may set, with their defaults.
BENCH_OPTIONS: dict[str, Any] = {
    "batch_size": 8,
    "concurrency": 16,
    "max_new_tokens": 16,
    "limit": 0,
    "device": "auto",
    "dtype": "auto",
    "timeout": 120.0,
}
# Keys the study sets for every arm (see the module docstring), per kind.
STUDY_KEYS = {
    "stage1": ("model",),
    "sft": ("model", "vision_tower"),
    "rl": ("model", "rm", "vision_tower"),
    "hybrid": (
        "model", "vision_tower", "rm",
        "sft.model", "sft.vision_tower", "rl.model", "rl.rm", "rl.vision_tower",
    ),
}  # fmt: skip
# Stands in for a run folder not made yet (a Stage-1 step's, for vision_tower=); the plan
# writes references as "@step:<key>/final" and ``plan.resolve_references`` replaces them.
PLACEHOLDER_TOWER = "@step:stage1/final"
FIELDS = ("name", "version", "model", "rm", "clip", "arms", "probe_sets", "round", "base_arm")


class StudyError(ValueError):
    """A study file that cannot be planned; the message is one line naming the arm and key."""


@dataclass(frozen=True)
class ArmSpec:
    """One arm: what it trains. ``stage1`` is Stage-1's config overrides (``None``: no Stage-1,
    M keeps its own CLIP tower); ``stage2_kind`` is "sft", "rl", "hybrid" or ``None`` (no
    Stage-2), ``stage2`` that kind's overrides (hybrid: ``preset``, bare, ``sft.KEY`` and
    ``rl.KEY`` keys). Neither stage: the base model as it is."""

    name: str
    stage1: dict[str, Any] | None = None
    stage2_kind: str | None = None
    stage2: dict[str, Any] | None = None

    @property
    def trains(self) -> bool:
        return self.stage1 is not None or self.stage2_kind is not None


@dataclass(frozen=True)
class StudySpec:
    """A loaded, checked study file (see the module docstring)."""

    name: str
    version: str
    model: str
    rm: str
    clip: str
    arms: tuple[ArmSpec, ...]
    probe_sets: tuple[str, ...]
    round: str | None = None
    base_arm: str = "base"
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


def load_study(path: str | Path) -> StudySpec:
    """The study in a JSON file; ``StudyError`` (one line) when it cannot be read or checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StudyError(f"{path}: cannot read the study file: {err}") from err
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study file holds one JSON object")
    return study_from_dict(data)


def study_from_dict(d: dict[str, Any]) -> StudySpec:
    """The checked study of a ``study.json`` object; ``StudyError`` names what is wrong."""
    from training.studies.presets import expand_arms

    if not isinstance(d, dict):
        raise StudyError("a study is one JSON object")
    unknown = [k for k in d if k not in (*FIELDS, "settings")]
    if unknown:
        hint = did_you_mean(unknown[0], (*FIELDS, "settings"))
        raise StudyError(f"unknown study key {unknown[0]!r}{hint}")
    for key in ("name", "version", "model"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise StudyError(f"the study needs {key!r} (a non-empty string)")
    probe_sets = d.get("probe_sets", [])
    if isinstance(probe_sets, str):
        probe_sets = [probe_sets]
    if not isinstance(probe_sets, list) or not all(isinstance(p, str) and p for p in probe_sets):
        raise StudyError("probe_sets is a list of probe-set folders (or ids)")
    settings = _settings(d.get("settings") or {})
    arms = expand_arms(d.get("arms", "table2"))
    names = [arm.name for arm in arms]
    if not arms:
        raise StudyError("the study has no arms")
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise StudyError(f"arm {duplicate!r} appears twice (arm names are unique in a study)")
    base_arm = d.get("base_arm") or default_base_arm(arms)
    if base_arm not in names:
        raise StudyError(f"base_arm {base_arm!r} is not an arm of the study ({', '.join(names)})")
    round_ = d.get("round")
    spec = StudySpec(
        name=d["name"].strip(),
        version=d["version"].strip(),
        model=d["model"].strip(),
        rm=str(d.get("rm") or ""),
        clip=str(d.get("clip") or Stage1Config().model),
        arms=tuple(arms),
        probe_sets=tuple(probe_sets),
        round=str(round_) if round_ not in (None, "") else None,
        base_arm=base_arm,
        settings=settings,
    )
    for arm in spec.arms:
        check_arm(spec, arm)
    return spec


def default_base_arm(arms: list[ArmSpec] | tuple[ArmSpec, ...]) -> str:
    """The arm that trains nothing, if the study has one; else its first arm."""
    return next((a.name for a in arms if not a.trains), arms[0].name)


def _settings(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise StudyError("settings is an object of kind -> {key: value}")
    out: dict[str, dict[str, Any]] = {}
    for kind, values in raw.items():
        if kind not in SETTINGS_KINDS:
            hint = did_you_mean(kind, SETTINGS_KINDS)
            raise StudyError(
                f"settings: unknown kind {kind!r}{hint}; one of stage1, sft, rl, bench"
            )
        if not isinstance(values, dict):
            raise StudyError(f"settings.{kind} is an object of key -> value")
        owned = STUDY_KEYS.get(kind, ())
        for key in values:
            if key in owned:
                raise StudyError(f"settings.{kind}: {key} is the study's own (set it at the top)")
            if kind == "bench" and key not in BENCH_OPTIONS:
                hint = did_you_mean(key, BENCH_OPTIONS)
                raise StudyError(f"settings.bench: unknown scorer option {key!r}{hint}")
        out[kind] = dict(values)
    return out


def arm_from_dict(d: Any) -> ArmSpec:
    """A custom arm: ``{"name", "stage1": {...} | null, "stage2_kind": ..., "stage2": {...}}``."""
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
        raise StudyError(f"an arm is an object with a name, got {d!r}"[:200])
    name = d["name"]
    unknown = [k for k in d if k not in ("name", "stage1", "stage2_kind", "stage2")]
    if unknown:
        hint = did_you_mean(unknown[0], ("stage1", "stage2_kind", "stage2"))
        raise StudyError(f"arm {name!r}: unknown arm key {unknown[0]!r}{hint}")
    kind = d.get("stage2_kind")
    if kind is not None and kind not in STAGE2_KINDS:
        raise StudyError(f"arm {name!r}: stage2_kind={kind!r}: one of sft, rl, hybrid or null")
    for key in ("stage1", "stage2"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise StudyError(f"arm {name!r}: {key} is an object of config keys or null")
    if kind is None and d.get("stage2"):
        raise StudyError(f"arm {name!r}: stage2 keys without a stage2_kind")
    stage2 = dict(d.get("stage2") or {}) if kind is not None else None
    stage1 = dict(d["stage1"]) if d.get("stage1") is not None else None
    return ArmSpec(name=name, stage1=stage1, stage2_kind=kind, stage2=stage2)


def arm_to_dict(arm: ArmSpec) -> dict[str, Any]:
    return {
        "name": arm.name,
        "stage1": arm.stage1,
        "stage2_kind": arm.stage2_kind,
        "stage2": arm.stage2,
    }


def to_dict(spec: StudySpec) -> dict[str, Any]:
    """The study as its ``study.json`` object; ``study_from_dict(to_dict(s)) == s``. Arms that
    are exactly preset groups are written by the groups' names, others in full."""
    from training.studies.presets import group_names

    groups = group_names(spec.arms)
    return {
        "name": spec.name,
        "version": spec.version,
        "model": spec.model,
        "rm": spec.rm,
        "clip": spec.clip,
        "arms": groups if groups is not None else [arm_to_dict(a) for a in spec.arms],
        "probe_sets": list(spec.probe_sets),
        "round": spec.round,
        "base_arm": spec.base_arm,
        "settings": {k: dict(v) for k, v in spec.settings.items()},
    }


def stage_values(
    spec: StudySpec, arm: ArmSpec, kind: str, *, vision_tower: str = ""
) -> dict[str, Any]:
    """The override values of one stage of ``arm`` as its command takes them: the study's
    ``settings`` < the arm's own keys < the study's models (``model``, ``rm``, ``clip``) and
    ``vision_tower`` (a Stage-1 reference, "" for none). Not resolved yet."""
    own = arm.stage1 if kind == "stage1" else arm.stage2
    owned = STUDY_KEYS[kind]
    for key in own or {}:
        if key in owned:
            raise StudyError(
                f"arm {arm.name!r} ({kind}): {key} is the study's own (set it at the top)"
            )
    settings = spec.settings
    if kind == "stage1":
        return {**settings.get("stage1", {}), **(own or {}), "model": spec.clip}
    if kind == "hybrid":
        values: dict[str, Any] = {
            **{f"sft.{k}": v for k, v in settings.get("sft", {}).items()},
            **{f"rl.{k}": v for k, v in settings.get("rl", {}).items()},
            **(own or {}),
            "model": spec.model,
        }
        if spec.rm:
            values["rl.rm"] = spec.rm
    else:
        values = {**settings.get(kind, {}), **(own or {}), "model": spec.model}
        if kind == "rl" and spec.rm:
            values["rm"] = spec.rm
    if vision_tower:
        values["vision_tower"] = vision_tower
        # A LoRA adapter names M as its base, and M does not hold the Stage-1 tower: SFT
        # writes merged weights so the tower travels with the checkpoint (a no-op without
        # LoRA). An RL phase's adapter names its own starting folder, which holds the tower.
        if kind == "sft":
            values.setdefault("merge_lora", True)
        elif kind == "hybrid":
            values.setdefault("sft.merge_lora", True)
    return values


def resolve_stage(arm: ArmSpec, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The full resolved config (a JSON-ready dict) of one stage; hybrid as ``preset`` plus
    ``sft.KEY`` / ``rl.KEY`` pairs (no ``rl.`` keys when its preset runs no RL)."""
    cls = KINDS[kind]
    if not hasattr(cls, "compose"):
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise StudyError(
                    f"arm {arm.name!r} ({kind}): unknown config key {key!r}"
                    f"{did_you_mean(key, known)}"
                )
    try:
        config: Any = resolve(cls, {}, values)
    except (ConfigError, TypeError) as err:
        raise StudyError(f"arm {arm.name!r} ({kind}): {err}") from err
    if kind == "hybrid":
        out: dict[str, Any] = {"preset": config.preset}
        for phase in ("sft", "rl"):
            part = getattr(config, phase)
            if part is not None:
                out.update({f"{phase}.{k}": v for k, v in _as_json(part).items()})
        return out
    return _as_json(config)


def _as_json(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def check_arm(spec: StudySpec, arm: ArmSpec) -> None:
    """Resolve every stage of ``arm`` (with a placeholder Stage-1 reference): ``StudyError``
    on an unknown key or a bad value."""
    if arm.stage1 is not None:
        resolve_stage(arm, "stage1", stage_values(spec, arm, "stage1"))
    if arm.stage2_kind is not None:
        tower = PLACEHOLDER_TOWER if arm.stage1 is not None else ""
        kind = arm.stage2_kind
        resolve_stage(arm, kind, stage_values(spec, arm, kind, vision_tower=tower))
