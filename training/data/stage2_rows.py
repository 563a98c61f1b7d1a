"""Stage-2 records of one correction trajectory, in ``docs/formats.md``'s shapes.

Plain functions over plain values (no Django, no database, no torch), so the rules below are
tested and read in one place. The web export feeds them the trajectories it reads from the
database and ``training.data.synthetic`` its made-up ones; both hand the records to
``training.data.writer.VersionWriter``, and ``training.data.version`` reads them back.

A trajectory is Q, the steps ``(A_k, F_k)`` for k = 0..n, and the final answer people kept.

- **SFT** (``sft.jsonl``): one row per correction step, ``(I, Q, A_k, F_k, A*_{k+1})``: every
  step whose feedback is a correction (not the stop phrase, not empty) and that has a next
  answer. The next answer is step k+1's response; after the last step it is the final answer
  when that differs from A_n (a person corrected what the loop left).
- **RM** (``rm.jsonl``): one row per critique ``(I, Q, A_k, evidence, F_k)``, every step with
  feedback. An approved trajectory ends with the stop phrase (``STOP_PHRASE``) on its
  final answer: on the last step when A_n is the final answer, else on a row of its own
  (step n+1) after A_n's critique. That row is what teaches the RM when to stop.
- **LLaVA** (``llava.json``): the trajectory as one conversation: ``<image>\\nQ``, A_0, then
  ``Feedback: F_k`` / A*_{k+1} turns for each correction step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from training.formats import STOP_PHRASE, is_stop


@dataclass(frozen=True)
class StepRow:
    k: int
    response: str
    feedback: str
    error_types: list[str]


@dataclass
class TrajectoryRecords:
    """What one trajectory contributes to each Stage-2 file."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    rm: list[dict[str, Any]] = field(default_factory=list)
    llava: dict[str, Any] | None = None


def corrections(steps: Sequence[StepRow], final_answer: str) -> list[tuple[StepRow, str]]:
    """The correction steps with their target A*_{k+1}, in order of k.

    >>> s = [StepRow(0, "red", "It is blue.", ["attribute"]), StepRow(1, "blue", "", [])]
    >>> [(step.k, target) for step, target in corrections(s, "blue")]
    [(0, 'blue')]
    >>> [(step.k, target) for step, target in corrections(s, "a blue car")]
    [(0, 'blue')]
    >>> s = [StepRow(0, "red", "It is blue.", [])]
    >>> [(step.k, target) for step, target in corrections(s, "blue")]
    [(0, 'blue')]
    """
    out = []
    for n, step in enumerate(steps):
        if is_stop(step.feedback):
            continue
        if n + 1 < len(steps):
            target = steps[n + 1].response
        elif final_answer.strip() and final_answer != step.response:
            target = final_answer
        else:
            continue  # the loop ran out of steps and nobody wrote the corrected answer
        out.append((step, target))
    return out


def trajectory_records(
    *,
    trajectory: Mapping[str, Any],
    steps: Sequence[StepRow],
    evidence: str,
    approved: bool,
    extra: Mapping[str, Any] | None = None,
) -> TrajectoryRecords:
    """SFT, RM and LLaVA records of one trajectory (see the module docstring for the rules).

    ``trajectory`` has ``id``, ``image`` (sha256), ``question`` and ``final_answer``; ``extra``
    keys (the ``uri`` in reference mode) are added to every record.
    """
    extra = dict(extra or {})
    tid, image, question = trajectory["id"], trajectory["image"], trajectory["question"]
    final = trajectory.get("final_answer") or ""
    base = {"trajectory": tid, "image": image, "question": question, **extra}
    out = TrajectoryRecords()
    steps = sorted(steps, key=lambda s: s.k)
    if not steps:
        return out
    pairs = corrections(steps, final)
    for step, target in pairs:
        out.sft.append(
            {
                **base,
                "id": f"{tid}-{step.k}",
                "step": step.k,
                "response": step.response,
                "feedback": step.feedback,
                "target": target,
                "error_types": list(step.error_types),
            }
        )
    last = steps[-1]
    # The answer an approved trajectory ends on: its final answer, or the last response.
    kept = final if final.strip() else last.response
    for step in steps:
        feedback = step.feedback
        if approved and step is last and step.response == kept:
            feedback = STOP_PHRASE
        if not feedback.strip():
            continue
        out.rm.append(_rm_row(base, tid, step.k, step.response, evidence, feedback))
    if approved and last.response != kept:
        out.rm.append(_rm_row(base, tid, last.k + 1, kept, evidence, STOP_PHRASE))
    turns = [
        {"from": "human", "value": f"<image>\n{question}"},
        {"from": "gpt", "value": steps[0].response},
    ]
    for step, target in pairs:
        turns.append({"from": "human", "value": f"Feedback: {step.feedback}"})
        turns.append({"from": "gpt", "value": target})
    out.llava = {"id": f"trajectory-{tid}", "image": image, **extra, "conversations": turns}
    return out


def _rm_row(
    base: dict[str, Any], tid: int, k: int, response: str, evidence: str, feedback: str
) -> dict[str, Any]:
    return {
        **base,
        "id": f"{tid}-{k}",
        "step": k,
        "response": response,
        "evidence": evidence,
        "feedback": feedback,
    }
