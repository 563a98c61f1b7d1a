"""Running ``python -m training rectify`` for a system's responses (no Django, no Celery).

The input rows are ``{"id", "question", "image_path" | "uri"}``; rectify writes one output row
per input row in the same order, ``{"id", "final", "outcome", "steps", ...}`` or
``{"id", "error"}``. This module writes the input, runs the command as a subprocess with a
log file and a time limit, and reads the output back into responses and per-item failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RectifyError(RuntimeError):
    """The command could not run, failed as a whole, or wrote unreadable output."""


@dataclass
class RectifyOutput:
    responses: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def write_items(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def rectify_command(
    *, model: str, rm: str, k: int, data: Path, out: Path, python: str = sys.executable
) -> list[str]:
    return [
        python, "-m", "training", "rectify", "--model", model, "--rm", rm, "--k", str(k),
        "--data", str(data), "--out", str(out),
    ]  # fmt: skip


def run(command: Sequence[str], *, log_path: Path, timeout_s: float, cwd: Path | None) -> None:
    """Run the command, its output into ``log_path``; raise ``RectifyError`` on failure."""
    with log_path.open("ab") as log:
        try:
            completed = subprocess.run(
                list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
            )  # fmt: skip
        except FileNotFoundError as error:
            raise RectifyError(f"could not start {command[0]}: {error}") from None
        except subprocess.TimeoutExpired:
            raise RectifyError(
                f"rectify ran longer than {timeout_s:.0f} s and was stopped"
            ) from None
    if completed.returncode != 0:
        raise RectifyError(f"rectify exited with code {completed.returncode}: {tail(log_path)}")


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:].strip()
    except OSError:
        return ""


def read_output(path: Path, expected: Sequence[str]) -> RectifyOutput:
    """Responses by item id and failures (an ``error`` row, or an item with no row)."""
    if not path.is_file():
        raise RectifyError(f"rectify wrote no output file {path.name}")
    result = RectifyOutput()
    wanted = set(expected)
    with path.open(encoding="utf-8") as rows:
        for number, line in enumerate(rows, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise RectifyError(f"{path.name} line {number}: not JSON ({error.msg})") from None
            key = str(row.get("id"))
            if key not in wanted:
                raise RectifyError(f"{path.name} line {number}: unknown id {key!r}")
            final = row.get("final")
            if row.get("error") or not isinstance(final, str) or not final.strip():
                reason = str(row.get("error") or "no final answer")
                result.failures.append({"id": key, "error": reason})
                continue
            detail = {k: row[k] for k in ("outcome", "steps") if k in row}
            result.responses[key] = (final, detail)
    answered = set(result.responses) | {f["id"] for f in result.failures}
    result.failures.extend(
        {"id": k, "error": "no output row"} for k in expected if k not in answered
    )
    return result
