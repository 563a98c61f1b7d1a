"""Studies without running anything: the study file, the preprint's arms, the shared plan and
the commands ``python -m training study-plan`` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.__main__ import main as training_main
from training.stage1.config import Stage1Config
from training.studies.plan import PHASE, Step, plan_study, reference, render_commands
from training.studies.presets import PRESETS
from training.studies.spec import (
    ArmSpec,
    StudyError,
    StudySpec,
    load_study,
    study_from_dict,
    to_dict,
)


def study(**over: Any) -> dict[str, Any]:
    return {
        "name": "s",
        "version": "data/v1",
        "model": "org/llava",
        "rm": "org/rm",
        "arms": "table2",
        "probe_sets": ["probes/pope"],
        **over,
    }


def by_arm(steps: list[Step], arm: str, kind: str) -> Step:
    found = [s for s in steps if arm in s.arms and s.kind == kind]
    assert len(found) == 1, (arm, kind, found)
    return found[0]


def test_table2_arms_follow_the_preprint() -> None:
    spec = study_from_dict(study())
    assert [a.name for a in spec.arms] == ["base", "no_stage1", "no_stage2", "full"]
    assert spec.base_arm == "base" and spec.clip == Stage1Config().model
    base, no1, no2, full = spec.arms
    assert not base.trains
    assert no1.stage1 is None and no1.stage2_kind == "hybrid"
    assert no2.stage1 == {"preset": "full"} and no2.stage2_kind is None
    assert full.stage1 == {"preset": "full"} and full.stage2 == {"preset": "hybrid"}


def test_figure_presets_use_the_existing_named_presets() -> None:
    fig1 = {a.name: a for a in PRESETS["figure1"]}
    # "+RTCL only" is gamma = 0, "+SCC only" beta = 0: Stage-1's itcl_rtcl / itcl_scc presets.
    for name, preset in (("rtcl", "itcl_rtcl"), ("scc", "itcl_scc"), ("both", "full")):
        assert fig1[name].stage1 == {"preset": preset}
        assert preset in Stage1Config.PRESETS
    assert Stage1Config.PRESETS["itcl_rtcl"]["gamma"] == 0
    assert Stage1Config.PRESETS["itcl_scc"]["beta"] == 0
    assert fig1["stage2_only"].stage1 is None
    fig2 = {a.name: a.stage2 for a in PRESETS["figure2"]}
    assert fig2 == {"sft_only": {"preset": "sft_only"}, "rl_only": {"preset": "rl_only"},
                    "hybrid": {"preset": "hybrid"}}  # fmt: skip


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"arms": [{"name": "x", "stage1": {"alpah": 1}}]},
         "arm 'x' (stage1): unknown config key 'alpah' (did you mean alpha?)"),
        ({"arms": [{"name": "y", "stage2_kind": "hybrid", "stage2": {"sft.lrr": 1}}]},
         "arm 'y' (hybrid): unknown config key 'lrr'"),
        ({"arms": [{"name": "z", "stage2_kind": "sft", "stage2": {"batch_size": 0}}]},
         "arm 'z' (sft): batch_size must be >= 1"),
        ({"arms": [{"name": "w", "stage2_kind": "dpo"}]}, "arm 'w': stage2_kind='dpo'"),
        ({"arms": [{"name": "m", "stage2_kind": "sft", "stage2": {"model": "other"}}]},
         "arm 'm' (sft): model is the study's own"),
        ({"arms": "table3"}, "unknown arm preset 'table3'"),
        ({"arms": ["table2", "base"]}, "arm 'base' appears twice"),
        ({"modle": "x"}, "unknown study key 'modle' (did you mean model?)"),
        ({"base_arm": "nope"}, "base_arm 'nope' is not an arm"),
        ({"settings": {"stage1": {"max_step": 2}}}, "unknown config key 'max_step'"),
        ({"settings": {"bench": {"batchsize": 2}}}, "unknown scorer option 'batchsize'"),
        ({"rm": "", "arms": "figure2"}, "arm 'rl_only' (hybrid): rm= is required"),
    ],
)  # fmt: skip
def test_bad_studies_are_refused_with_one_line_naming_the_arm(
    over: dict[str, Any], message: str
) -> None:
    with pytest.raises(StudyError) as err:
        study_from_dict(study(**over))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    custom = {"name": "mine", "stage1": {"preset": "itcl_only", "lr": 3e-5},
              "stage2_kind": "sft", "stage2": {"lr": 1e-4}}  # fmt: skip
    for arms in ("table2", ["table2", "figure2"], ["figure1", custom], [custom]):
        spec = study_from_dict(study(arms=arms, round="r1", settings={"sft": {"max_steps": 2}}))
        path = tmp_path / "study.json"
        path.write_text(json.dumps(to_dict(spec)), "utf-8")
        assert load_study(path) == spec
    assert to_dict(study_from_dict(study(arms=["table2", "figure2"])))["arms"] == [
        "table2",
        "figure2",
    ]


def test_identical_arms_are_one_step_shared_by_every_arm_using_it() -> None:
    steps = plan_study(study_from_dict(study(arms=["table2", "figure1", "figure2"])))
    keys = [s.key for s in steps]
    assert len(keys) == len(set(keys))
    full = by_arm(steps, "full", "hybrid")
    assert set(full.arms) == {"full", "both", "hybrid"}
    assert by_arm(steps, "both", "hybrid") is full and by_arm(steps, "hybrid", "hybrid") is full
    stage1 = by_arm(steps, "full", "stage1")
    assert set(stage1.arms) == {"no_stage2", "full", "both", "sft_only", "rl_only", "hybrid"}
    assert set(by_arm(steps, "no_stage1", "hybrid").arms) == {"no_stage1", "stage2_only"}
    bench = by_arm(steps, "full", "bench")
    assert set(bench.arms) == {"full", "both", "hybrid"} and bench.model_from == full.key
    # 3 Stage-1 runs (full, itcl_rtcl, itcl_scc), 1 tower swap, 6 Stage-2 runs, 8 bench runs
    # (base + 7 distinct trained models) for 11 arms.
    counts = {k: sum(s.kind == k for s in steps) for k in ("stage1", "tower", "hybrid", "bench")}
    assert counts == {"stage1": 3, "tower": 1, "hybrid": 6, "bench": 7 + 1}


def test_steps_come_in_dependency_order_with_stage1_references() -> None:
    steps = plan_study(study_from_dict(study(arms=["table2", "figure1"], probe_sets=["a", "b"])))
    seen: set[str] = set()
    for step in steps:
        assert set(step.needs) <= seen, step
        seen.add(step.key)
    # Stage-1 runs, then the runs that take a tower, then the benchmarks.
    phases = [PHASE[s.kind] for s in steps]
    assert phases == sorted(phases) and phases[0] == 0 and set(phases) == {0, 1, 2}
    stage1 = by_arm(steps, "full", "stage1")
    full = by_arm(steps, "full", "hybrid")
    assert full.needs == (stage1.key,)
    assert full.config["sft.vision_tower"] == reference(stage1.key) == f"@step:{stage1.key}/final"
    assert full.config["sft.merge_lora"] is True  # the tower travels with the checkpoint
    assert full.config["sft.model"] == "org/llava" and full.config["rl.rm"] == "org/rm"
    no_stage1 = by_arm(steps, "no_stage1", "hybrid")
    assert no_stage1.needs == () and no_stage1.config["sft.vision_tower"] == ""
    tower = by_arm(steps, "no_stage2", "tower")
    assert tower.config == {"model": "org/llava", "vision_tower": reference(stage1.key)}
    assert stage1.config["model"] == Stage1Config().model and stage1.config["beta"] == 0.5
    base = [s for s in steps if s.arms == ("base",)]
    assert [(s.kind, s.model_from, s.config["model"], s.probes) for s in base] == [
        ("bench", None, "org/llava", "a"),
        ("bench", None, "org/llava", "b"),
    ]


def test_keys_are_deterministic_and_follow_the_config() -> None:
    a = plan_study(study_from_dict(study(arms=["table2", "figure2"])))
    b = plan_study(study_from_dict(study(arms=["table2", "figure2"])))
    assert [(s.key, s.kind, s.arms) for s in a] == [(s.key, s.kind, s.arms) for s in b]
    longer = plan_study(study_from_dict(study(settings={"stage1": {"max_steps": 7}})))
    # A Stage-1 change changes its key, and so the keys of everything downstream of it ...
    assert by_arm(longer, "full", "stage1").key != by_arm(a, "full", "stage1").key
    assert by_arm(longer, "full", "hybrid").key != by_arm(a, "full", "hybrid").key
    # ... but not of the arms without Stage-1.
    assert by_arm(longer, "no_stage1", "hybrid").key == by_arm(a, "no_stage1", "hybrid").key
    assert by_arm(longer, "base", "bench").key == by_arm(a, "base", "bench").key


def test_render_commands_resolve_references_to_run_folders(tmp_path: Path) -> None:
    spec = study_from_dict(study(settings={"stage1": {"max_steps": 2}, "bench": {"limit": 4}}))
    steps = plan_study(spec)
    runs = tmp_path / "runs"
    commands = render_commands(steps, runs_dir=runs, version_dir=tmp_path / "v1")
    s1 = by_arm(steps, "full", "stage1")
    full = by_arm(steps, "full", "hybrid")
    tower = by_arm(steps, "no_stage2", "tower")
    line = dict(zip([s.key for s in steps], commands, strict=True))
    assert line[s1.key] == (
        f"python -m training stage1 --data {tmp_path}/v1 --out {runs}/{s1.key[:12]} "
        "preset=full max_steps=2"
    )
    assert f"sft.vision_tower={runs}/{s1.key[:12]}/final" in line[full.key]
    assert line[tower.key] == (
        f"python -m training swap-tower --model org/llava --vision-tower "
        f"{runs}/{s1.key[:12]}/final --out {runs}/{tower.key[:12]}"
    )
    bench = by_arm(steps, "full", "bench")
    assert line[bench.key] == (
        f"python -m training bench --model {runs}/{full.key[:12]}/final --probes probes/pope "
        f"--out {runs}/{bench.key[:12]} --limit 4"
    )
    assert "@step:" not in "\n".join(commands)


def test_study_plan_cli_prints_the_commands(tmp_path: Path, capsys) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study(arms=["base", "no_stage1"])), "utf-8")
    assert training_main(["study-plan", str(path), "--runs", str(tmp_path / "r")]) == 0
    steps = plan_study(load_study(path))
    hybrid, bench_base, bench_hybrid = steps
    r = tmp_path / "r"
    assert capsys.readouterr().out.splitlines() == [
        "# study s: 2 arms, 3 steps",
        f"# hybrid {hybrid.key[:12]}: no_stage1",
        f"python -m training hybrid --data data/v1 --out {r}/{hybrid.key[:12]} preset=hybrid "
        "sft.model=org/llava rl.model=org/llava rl.rm=org/rm",
        f"# bench {bench_base.key[:12]}: base",
        f"python -m training bench --model org/llava --probes probes/pope "
        f"--out {r}/{bench_base.key[:12]}",
        f"# bench {bench_hybrid.key[:12]}: no_stage1",
        f"python -m training bench --model {r}/{hybrid.key[:12]}/final --probes probes/pope "
        f"--out {r}/{bench_hybrid.key[:12]}",
    ]


def test_study_plan_cli_exits_2_with_one_line_on_a_bad_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study(arms=[{"name": "x", "stage1": {"gama": 0}}])), "utf-8")
    assert training_main(["study-plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: arm 'x' (stage1): unknown config key 'gama' (did you mean gamma?)"]
    assert training_main(["study-plan", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the study file" in capsys.readouterr().err


def test_a_spec_built_in_code_plans_like_a_file() -> None:
    spec = StudySpec(
        name="s", version="v", model="org/llava", rm="org/rm", clip="c",
        arms=(ArmSpec("base"), ArmSpec("s1", {"preset": "full"}, None, None)),
        probe_sets=("p",), round=None, base_arm="base",
    )  # fmt: skip
    assert study_from_dict(to_dict(spec)) == spec
    kinds = [s.kind for s in plan_study(spec)]
    assert kinds == ["stage1", "tower", "bench", "bench"]
