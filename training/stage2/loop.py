"""The iterative rectification loop (preprint §3.3, Eqs. 4-6), shared by inference
(``python -m training rectify``), the trajectory worker and evaluation jobs.

    A_0 = M(I, Q)
    for k = 0, 1, ...:
        F_k = RM(I, Q, A_k)                      # with the image's regions as evidence
        stop if F_k says "No further corrections needed." (or is empty), or k == K
        A_{k+1} = M(I, Prompt(Q, A_k, F_k))

K is the most revisions M makes. The RM also checks the last answer A_K, so every result says
whether the RM accepted it (``outcome == "accepted"``) or the loop ran out of steps
(``"max_steps"``). Each step records the latency of its M call and of its RM call, which is
what the preprint's Table 4 reports.

A loop can start from a given A_0 (``start``) instead of asking M: the trajectory worker's
seeded errors inject one controlled error into a correct reference answer this way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from training.formats import is_stop
from training.stage2.generation import Generator
from training.stage2.prompts import (
    answer_prompt,
    critique_prompt,
    prompt_versions,
    revision_prompt,
)


@dataclass
class Step:
    """A_k with the time M took to write it (None when A_0 was given), and the RM's F_k."""

    k: int
    response: str
    m_latency_s: float | None
    feedback: str | None = None
    rm_latency_s: float | None = None
    written_by: str = ""  # the model id of M, or "reference" / "seeded:<type>" for a given A_0


@dataclass
class Rectification:
    steps: list[Step]
    outcome: Literal["accepted", "max_steps"]
    model: str
    rm: str
    prompt_versions: dict[str, str] = field(default_factory=prompt_versions)

    @property
    def final(self) -> str:
        return self.steps[-1].response

    @property
    def revisions(self) -> int:
        return len(self.steps) - 1

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["final"] = self.final
        return out


async def rectify(
    *,
    question: str,
    m: Generator,
    rm: Generator,
    k: int,
    image: bytes | None = None,
    evidence: str = "",
    start: str | None = None,
    start_written_by: str = "reference",
) -> Rectification:
    """Run the loop for one (I, Q). Raises ``GenerationError`` when a call fails for good."""
    if k < 0:
        raise ValueError("k must be 0 or more")
    if start is None:
        first = await m.generate(answer_prompt(question), image=image)
        steps = [Step(0, first.text, first.latency_s, written_by=m.name)]
    else:
        steps = [Step(0, start, None, written_by=start_written_by)]
    while True:
        step = steps[-1]
        critique = await rm.generate(
            critique_prompt(question, step.response, evidence),
            image=image if rm.vision else None,
        )
        step.feedback, step.rm_latency_s = critique.text, critique.latency_s
        if is_stop(critique.text):
            return Rectification(steps, "accepted", m.name, rm.name)
        if step.k >= k:
            return Rectification(steps, "max_steps", m.name, rm.name)
        revised = await m.generate(
            revision_prompt(question, step.response, critique.text), image=image
        )
        steps.append(Step(step.k + 1, revised.text, revised.latency_s, written_by=m.name))
