"""Every Stage-2 prompt, built in one place and versioned.

SFT, RM training, RL, the rectification loop and the trajectory worker all build their text
here, so a model is always trained on the prompt it is later asked with. A change to any
template bumps its version; the version is stored with every trajectory and training run.

The revision prompt is the preprint's (§3.3.3, docs/formats.md), word for word:
``User: {Q} Assistant: {A_k} Feedback: {F_k} Assistant (Revised):``. Local models get it as
the user turn of their own chat template (``training.stage2.local``); endpoints get it as the
user message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from training.formats import STOP_PHRASE
from training.geometry import spatial_relation

ANSWER_PROMPT_VERSION = "fgam-answer-v1"
REVISION_PROMPT_VERSION = "fgam-revise-v1"
CRITIQUE_PROMPT_VERSION = "fgam-critique-v1"

CRITIQUE_INSTRUCTIONS = (
    "You are the rectification module. Check the answer to the question about the image "
    "against the visual evidence: objects that are not there, wrong attributes (colour, size, "
    "material), wrong spatial relations, and broken reasoning steps. If the answer is fully "
    f'consistent with the evidence, reply exactly "{STOP_PHRASE}" and nothing else. Otherwise '
    "reply with short, precise correction feedback that says what is wrong and what is true, "
    "so that the answer can be revised."
)


def prompt_versions() -> dict[str, str]:
    """The versions of the three templates, as stored in a run's provenance."""
    return {
        "answer": ANSWER_PROMPT_VERSION,
        "revision": REVISION_PROMPT_VERSION,
        "critique": CRITIQUE_PROMPT_VERSION,
    }


def answer_prompt(question: str) -> str:
    """The user turn that asks M for A_0 = M(I, Q) (Eq. 4): the question itself.

    >>> answer_prompt("  What is left of the cup? ")
    'What is left of the cup?'
    """
    return question.strip()


def revision_prompt(question: str, response: str, feedback: str) -> str:
    """The preprint's augmented prompt for A_{k+1} = M(I, Prompt(Q, A_k, F_k)) (Eq. 6).

    >>> print(revision_prompt("What colour?", "It is red.", "The car is blue."))
    User: What colour? Assistant: It is red. Feedback: The car is blue. Assistant (Revised):
    """
    return (
        f"User: {question.strip()} Assistant: {response.strip()} "
        f"Feedback: {feedback.strip()} Assistant (Revised):"
    )


def critique_prompt(question: str, response: str, evidence: str) -> str:
    """The RM's input F_k = RM(I, Q, A_k) (Eq. 5), with the visual evidence as text.

    >>> print(critique_prompt("Where is the cup?", "On the left.", "cup [0, 0, 10, 10]: a cup"))
    ... # doctest: +ELLIPSIS
    You are the rectification module. ...
    <BLANKLINE>
    Question: Where is the cup?
    Answer: On the left.
    Evidence (regions of the image: phrase [x0, y0, x1, y1]: caption; then relations):
    cup [0, 0, 10, 10]: a cup
    """
    evidence = evidence.strip() or "(no regions)"
    return (
        f"{CRITIQUE_INSTRUCTIONS}\n\n"
        f"Question: {question.strip()}\n"
        f"Answer: {response.strip()}\n"
        "Evidence (regions of the image: phrase [x0, y0, x1, y1]: caption; then relations):\n"
        f"{evidence}"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def evidence_text(regions: Sequence[Mapping[str, Any]], *, max_relations: int = 40) -> str:
    """The regions of an image as the RM's evidence text (FORMATS.md's RM record).

    One line per region, ``phrase [x0, y0, x1, y1]: caption``, then the FORMATS.md relation of
    each pair of named regions, ``phrase_i <relation> phrase_j`` (at most ``max_relations``
    lines, nearest pairs first in input order). Regions are used in the order given; callers
    pass them sorted (by id) so the text is deterministic.

    >>> print(evidence_text([
    ...     {"phrase": "cup", "box": [0, 0, 10, 10], "caption": "a red cup"},
    ...     {"phrase": "plate", "box": [50, 0, 60, 10], "caption": ""},
    ... ]))
    cup [0, 0, 10, 10]: a red cup
    plate [50, 0, 60, 10]
    cup left of plate
    """
    lines = []
    for region in regions:
        box = ", ".join(_number(v) for v in region["box"])
        phrase = (region.get("phrase") or "region").strip()
        caption = (region.get("caption") or "").strip()
        lines.append(f"{phrase} [{box}]: {caption}" if caption else f"{phrase} [{box}]")
    relations = list(_relations(regions))[:max_relations]
    return "\n".join(lines + relations)


def _relations(regions: Sequence[Mapping[str, Any]]) -> Iterable[str]:
    named = [r for r in regions if (r.get("phrase") or "").strip()]
    for i, a in enumerate(named):
        for b in named[i + 1 :]:
            if a["phrase"].strip() == b["phrase"].strip():
                continue
            relation = spatial_relation(tuple(a["box"]), tuple(b["box"]))
            yield f"{a['phrase'].strip()} {relation} {b['phrase'].strip()}"
