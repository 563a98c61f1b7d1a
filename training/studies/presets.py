"""The preprint's ablation arms (§4.3-4.5) as ``ArmSpec`` groups: Table 2, Figure 1, Figure 2.

Every arm uses the existing named presets rather than new ones: Stage-1's loss-term presets
(``training.stage1.config.Stage1Config.PRESETS``) and the hybrid command's Figure-2 presets
(``training.stage2.config.HYBRID_PRESETS``), so an arm started by hand as a job with the same
preset is the same run.

- Table 2 (§4.3): ``base`` (no training), ``no_stage1`` (Stage-2 hybrid on M as it is),
  ``no_stage2`` (Stage-1 only: its CLIP tower placed into M, nothing else trained; the plan
  makes this a "tower" step, see ``training.studies.tower``), ``full`` (Stage-1 + hybrid).
- Figure 1 (§4.4), from the Stage-2-only model adding Stage-1 terms: ``stage2_only``
  (= ``no_stage1``), ``rtcl`` (Stage-1 ``itcl_rtcl``: gamma = 0, then hybrid), ``scc``
  (``itcl_scc``: beta = 0, then hybrid), ``both`` (= ``full``). The global ITCL term stays on
  in both, as §3.2.2 always combines it with RTCL (the preset's own comment).
- Figure 2 (§4.5), after Stage-1 (full): ``sft_only``, ``rl_only``, ``hybrid`` (= ``full``).

Arms equal in configuration across groups (``full``, ``both``, ``hybrid``) are planned once
and shared (``training.studies.plan``).
"""

from __future__ import annotations

from typing import Any

from training.studies.spec import ArmSpec, StudyError, arm_from_dict


def _arm(name: str, stage1: str | None, stage2: str | None) -> ArmSpec:
    return ArmSpec(
        name=name,
        stage1={"preset": stage1} if stage1 else None,
        stage2_kind="hybrid" if stage2 else None,
        stage2={"preset": stage2} if stage2 else None,
    )


PRESETS: dict[str, tuple[ArmSpec, ...]] = {
    "table2": (
        _arm("base", None, None),
        _arm("no_stage1", None, "hybrid"),
        _arm("no_stage2", "full", None),
        _arm("full", "full", "hybrid"),
    ),
    "figure1": (
        _arm("stage2_only", None, "hybrid"),
        _arm("rtcl", "itcl_rtcl", "hybrid"),
        _arm("scc", "itcl_scc", "hybrid"),
        _arm("both", "full", "hybrid"),
    ),
    "figure2": (
        _arm("sft_only", "full", "sft_only"),
        _arm("rl_only", "full", "rl_only"),
        _arm("hybrid", "full", "hybrid"),
    ),
}
# Every preset arm by name, so a study may list single arms ("arms": ["base", "figure2"]).
PRESET_ARMS: dict[str, ArmSpec] = {arm.name: arm for group in PRESETS.values() for arm in group}


def expand_arms(value: Any) -> list[ArmSpec]:
    """The arms of a study file's ``arms``: a group name, or a list of group names, preset arm
    names and custom arm objects (in that order, as written)."""
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list):
        raise StudyError("arms is a preset name, or a list of preset names and arm objects")
    arms: list[ArmSpec] = []
    for item in items:
        if isinstance(item, dict):
            arms.append(arm_from_dict(item))
        elif isinstance(item, str) and item in PRESETS:
            arms.extend(PRESETS[item])
        elif isinstance(item, str) and item in PRESET_ARMS:
            arms.append(PRESET_ARMS[item])
        else:
            known = ", ".join(PRESETS)
            raise StudyError(f"unknown arm preset {item!r}; a group ({known}) or an arm name")
    return arms


def group_names(arms: tuple[ArmSpec, ...]) -> list[str] | None:
    """The preset group names whose concatenation is exactly ``arms``, or ``None``."""
    names: list[str] = []
    rest = list(arms)
    while rest:
        for name, group in PRESETS.items():
            if tuple(rest[: len(group)]) == group:
                names.append(name)
                rest = rest[len(group) :]
                break
        else:
            return None
    return names
