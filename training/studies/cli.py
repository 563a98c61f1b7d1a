"""``python -m training study-plan study.json [--runs DIR] [--data DIR]``: print the commands
a study would run, in dependency order, one per line (each after a ``#`` comment naming its
kind, key and arms), for a team that runs training on its own scheduler.

The output is a shell script: ``python -m training study-plan s.json > plan.sh && sh -e
plan.sh`` runs the whole study. Run folders are ``RUNS/<key[:12]>`` (``--runs``, default
``runs``); ``--data`` replaces the study's ``version`` when that is an id of the web app
rather than a folder. A bad study file exits 2 with one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.studies.plan import plan_study, render_commands
from training.studies.spec import StudyError, load_study


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training study-plan",
        description="Print the commands of a study (study.json), in dependency order.",
    )
    p.add_argument("study", help="the study file (study.json)")
    p.add_argument("--runs", default="runs", help="folder of the run folders (default: runs)")
    p.add_argument("--data", help="dataset version folder (default: the study's version)")
    p.add_argument("--python", default="python", help="the interpreter the commands name")
    args = p.parse_args(argv)
    try:
        spec = load_study(args.study)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = plan_study(spec)
    commands = render_commands(
        steps, runs_dir=args.runs, version_dir=args.data or spec.version, python=args.python
    )
    print(f"# study {spec.name}: {len(spec.arms)} arms, {len(steps)} steps")
    for step, command in zip(steps, commands, strict=True):
        print(f"# {step.kind} {step.short}: {', '.join(step.arms)}")
        print(command)
    return 0
