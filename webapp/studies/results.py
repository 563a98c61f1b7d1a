"""What a study's page, command and API show: its steps, the arms x stages grid, and the
preprint's layouts filled with measured numbers.

Decisions:

- The score of Table 2 and Figures 1-2 is POPE F1 over the whole probe set (``splits.all``)
  with the ``pope`` parser (lmms-eval's reading of a yes/no answer), read from the bench job's
  ``metrics`` (``metrics.json`` as the scorer wrote it, unchanged); the interval is its
  ``f1_ci95`` (the scorer's bootstrap). Nothing is recomputed here.
- Δ is the arm's F1 minus the base arm's on the same probe set. The paired mark is McNemar's
  test (``training.probes.compare``) of the two bench runs' predictions, pope parser: ``*`` for
  p < 0.05, ``**`` for p < 0.01; the p-value is in the CSV and in each cell's tooltip.
- A figure is drawn for every preset group (``figure1``, ``figure2``) whose arms are all in
  the study (else one chart of all arms); Table 2 lists every arm of the study, in its order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.studies.presets import PRESETS
from webapp.evaluation.table_render import Cell, Column, Table
from webapp.studies.models import Study, StudyStep

PARSER = "pope"
SPLIT = "all"
STAGES = ("stage1", "stage2", "bench")


def job_label(step: StudyStep) -> str:
    if step.training_job_id:
        return f"training #{step.training_job_id}"
    if step.benchmark_job_id:
        return f"bench #{step.benchmark_job_id}"
    return ""


def step_rows(study: Study) -> list[dict[str, Any]]:
    """One plain dict per step (command output, API)."""
    rows = []
    for step in study.steps.select_related("probe_set").order_by("position"):
        rows.append(
            {
                "key": step.key, "short": step.key[:12], "kind": step.kind,
                "arms": list(step.arms), "needs": list(step.needs), "status": step.status,
                "error": step.error, "job": job_label(step),
                "training_job": step.training_job_id, "benchmark_job": step.benchmark_job_id,
                "probe_set": step.probe_set.set_id if step.probe_set else None,
                "run_dir": step.run_dir, "attempts": step.attempts,
            }
        )  # fmt: skip
    return rows


@dataclass
class Score:
    """One arm on one probe set: the bench step and the figures read from its metrics."""

    step: StudyStep
    f1: float | None = None
    ci: tuple[float, float] | None = None
    delta: float | None = None
    p_value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def mark(self) -> str:
        if self.p_value is None:
            return ""
        return "**" if self.p_value < 0.01 else "*" if self.p_value < 0.05 else ""


@dataclass
class StudyResults:
    study: Study
    arms: list[str]
    base_arm: str
    probe_sets: list[Any]  # ProbeSet rows, in the study's order
    steps: list[StudyStep]
    # arm -> stage -> step (stage2 is the step holding the arm's final model: sft/rl/hybrid or
    # tower); bench per probe set id
    grid: dict[str, dict[str, Any]]
    scores: dict[tuple[str, int], Score]

    def score(self, arm: str, probe_set_id: int) -> Score | None:
        return self.scores.get((arm, probe_set_id))

    @property
    def complete(self) -> bool:
        return all(s.f1 is not None for s in self.scores.values()) and bool(self.scores)


def arm_names(study: Study) -> tuple[list[str], str]:
    from training.studies.spec import study_from_dict

    spec = study_from_dict(study.spec)
    return [arm.name for arm in spec.arms], spec.base_arm


def collect(study: Study, *, compare: bool = True) -> StudyResults:
    """The grid and every score that has arrived (``compare``: run the paired tests too)."""
    arms, base = arm_names(study)
    steps = list(
        study.steps.select_related("training_job", "benchmark_job", "probe_set").order_by(
            "position"
        )
    )
    grid: dict[str, dict[str, Any]] = {arm: {"stage1": None, "stage2": None, "bench": {}}
                                       for arm in arms}  # fmt: skip
    probe_sets: dict[int, Any] = {}
    scores: dict[tuple[str, int], Score] = {}
    for step in steps:
        for arm in step.arms:
            if arm not in grid:
                continue
            if step.kind == "stage1":
                grid[arm]["stage1"] = step
            elif step.kind == "bench" and step.probe_set is not None:
                grid[arm]["bench"][step.probe_set_id] = step
                probe_sets.setdefault(step.probe_set_id, step.probe_set)
                scores[(arm, step.probe_set_id)] = _score(step)
            else:
                grid[arm]["stage2"] = step
    for (arm, set_id), score in scores.items():
        base_score = scores.get((base, set_id))
        if arm == base or base_score is None or score.f1 is None or base_score.f1 is None:
            continue
        score.delta = score.f1 - base_score.f1
        if compare:
            score.p_value = paired_p(base_score.step, score.step)
    return StudyResults(study, arms, base, list(probe_sets.values()), steps, grid, scores)


def _score(step: StudyStep) -> Score:
    job = step.benchmark_job
    if job is None or step.status != StudyStep.Status.SUCCEEDED or not job.metrics:
        return Score(step)
    figures = ((job.metrics.get("splits") or {}).get(SPLIT) or {}).get(PARSER) or {}
    ci = figures.get("f1_ci95")
    return Score(
        step,
        f1=figures.get("f1"),
        ci=(float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else None,
        metrics=figures,
    )


def paired_p(base: StudyStep, other: StudyStep) -> float | None:
    """McNemar's p-value of two bench runs (pope parser); None when they cannot be paired (the
    same run shared by two arms, a run folder gone)."""
    from training.probes.compare import CompareError, compare_runs

    a, b = base.benchmark_job, other.benchmark_job
    if a is None or b is None:
        return None
    if a.pk == b.pk:
        return 1.0
    try:
        result = compare_runs(a.out_dir, b.out_dir, parsers=[PARSER])
    except (CompareError, OSError):
        return None
    return float(result["parsers"][PARSER]["p_value"])


def table2(results: StudyResults) -> Table:
    """Table 2's layout: one row per arm, per probe set F1 (with CI), Δ vs base and p."""
    columns = [Column("Arm", numeric=False)]
    for probe_set in results.probe_sets:
        columns += [
            Column(f"{probe_set.set_id} F1", direction="up", has_ci=True),
            Column(f"{probe_set.set_id} vs base"),  # no Δ: pdflatex has no such glyph
            Column(f"{probe_set.set_id} p"),
        ]
    rows = []
    for arm in results.arms:
        row = [Cell(arm + (" (base)" if arm == results.base_arm else ""))]
        for probe_set in results.probe_sets:
            score = results.score(arm, probe_set.pk)
            row += _cells(score)
        rows.append(tuple(row))
    study = results.study
    notes = (
        f"POPE F1 ({PARSER} parser, split {SPLIT}) from each bench run's metrics.json; "
        "95% bootstrap intervals in brackets.",
        f"Differences against {results.base_arm}; McNemar paired test: * p < 0.05, ** p < 0.01.",
        f"Dataset version {study.version.name}, content_sha256 {study.version.content_sha256}.",
    )
    return Table(
        key="table2", title=f"Study {study.name}: Table 2", columns=tuple(columns),
        rows=tuple(rows), notes=notes,
    )  # fmt: skip


def _cells(score: Score | None) -> list[Cell]:
    if score is None or score.f1 is None:
        return [Cell("—"), Cell("—"), Cell("—")]
    text = f"{score.f1:.4f}"
    if score.ci is not None:
        text += f" [{score.ci[0]:.3f}, {score.ci[1]:.3f}]"
    low, high = score.ci if score.ci else (None, None)
    f1 = Cell(text, value=score.f1, ci_low=low, ci_high=high)
    if score.delta is None:
        return [f1, Cell("—"), Cell("—")]
    delta = Cell(f"{score.delta:+.4f}{score.mark}", value=score.delta)
    p = Cell(f"{score.p_value:.4g}" if score.p_value is not None else "—", value=score.p_value)
    return [f1, delta, p]


def figure_groups(results: StudyResults) -> list[tuple[str, list[str]]]:
    """``(figure name, arms)`` for each figure preset whose arms are all in the study."""
    out = []
    for name in ("figure1", "figure2"):
        arms = [arm.name for arm in PRESETS[name]]
        if all(arm in results.grid for arm in arms):
            out.append((name, arms))
    if not out:  # a custom or Table-2-only study: one chart of all its arms
        out.append(("all arms", list(results.arms)))
    return out


FORMATS = {"csv": "text/csv", "md": "text/markdown", "tex": "application/x-tex"}
