"""Deterministic M and RM for the loopback server (tests and the trajectory benchmark).

``play(request)`` answers a chat request as M or as the RM, from the prompt text alone:

- the RM's prompt starts with the critique instructions ("You are the rectification
  module"). It accepts an answer holding ``REVISED_ANSWER`` and asks for a fix otherwise; a question
  containing ``NEVER-ACCEPT`` is never accepted.
- M's first answer (the bare question) says the car is red; a revision (the preprint's
  "Assistant (Revised):" prompt) says it is blue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.workers.llm_server import _texts
from training.formats import STOP_PHRASE
from training.stage2.prompts import CRITIQUE_INSTRUCTIONS

FIRST_ANSWER = "The car on the left is red."
REVISED_ANSWER = "The car on the left is blue."
FEEDBACK = "The car on the left is blue, not red. Please revise your description."


def prompt_of(request: Mapping[str, Any]) -> str:
    return "\n".join(_texts(request))


def is_critique(request: Mapping[str, Any]) -> bool:
    return prompt_of(request).startswith(CRITIQUE_INSTRUCTIONS[:30])


def critiqued_answer(request: Mapping[str, Any]) -> str:
    found = re.search(r"^Answer: (.*)$", prompt_of(request), re.MULTILINE)
    return found.group(1) if found else ""


def play(request: Mapping[str, Any]) -> str:
    text = prompt_of(request)
    if is_critique(request):
        if "NEVER-ACCEPT" in text or REVISED_ANSWER not in critiqued_answer(request):
            return FEEDBACK
        return STOP_PHRASE
    if "Assistant (Revised):" in text:
        return REVISED_ANSWER
    return FIRST_ANSWER
