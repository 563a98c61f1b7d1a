"""The body of a study's "tower" step: ``python -m training swap-tower`` as a subprocess.

The arm without Stage-2 is M with the Stage-1 tower in place and nothing else trained
(``training.studies.tower``). It takes seconds and trains nothing, so it gets no
``TrainingJob`` row (whose kinds are ``python -m training`` trainers with a version's data);
the step keeps its folder, command and log itself. The step is claimed with a conditional
``UPDATE`` (queued -> running), so a redelivered task does nothing, and the study advances when
it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from webapp.exports.training_jobs import LOG_TAIL_CHARS, stated_error
from webapp.studies.models import StudyStep


def tower_command(step: StudyStep) -> list[str]:
    return [
        sys.executable, "-m", "training", "swap-tower",
        "--model", str(step.config["model"]),
        "--vision-tower", str(step.config["vision_tower"]),
        "--out", step.out_dir,
    ]  # fmt: skip


def run_tower_step(*, step_id: int) -> StudyStep | None:
    from webapp.studies.services import advance

    S = StudyStep.Status
    if not StudyStep.objects.filter(pk=step_id, status=S.QUEUED).update(status=S.RUNNING):
        return None
    step = StudyStep.objects.get(pk=step_id)
    out = Path(step.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.txt"
    with log_path.open("ab") as log:
        try:
            code = subprocess.call(
                tower_command(step), stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        except OSError as exc:
            code, reason = -1, f"could not start: {exc}"
        else:
            reason = ""
    tail = log_path.read_bytes()[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")
    if code == 0 and (out / "final" / "config.json").is_file():
        status, error = S.SUCCEEDED, ""
    else:
        status = S.FAILED
        error = reason or f"exit code {code}" + (
            f": {stated_error(tail)}" if stated_error(tail) else ""
        )
    StudyStep.objects.filter(pk=step_id).update(status=status, error=error, log_tail=tail)
    advance(step.study_id)
    step.refresh_from_db()
    return step
