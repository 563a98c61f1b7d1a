"""Parsing a rating form, and the per-slot view of an assignment that the page renders.

Field names use the slot a rater sees, never a response or system id:
``r<slot>-<criterion>`` (1..5), ``r<slot>-hallucination`` (on), ``r<slot>-errors`` (one value
per error type) and ``r<slot>-version`` (the version the page showed, for revisions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from webapp.evaluation.assignment import RatingInput, slot_ratings
from webapp.evaluation.models import Assignment, Round


def parse_rating_form(data: QueryDict, round_: Round, slots: int) -> list[RatingInput]:
    """One ``RatingInput`` per slot; a missing or non-numeric score is left out (so the
    validation in ``assignment.validate_inputs`` names it), nothing is raised here."""
    inputs = []
    for slot in range(1, slots + 1):
        scores: dict[str, Any] = {}
        for key in round_.likert_keys:
            raw = data.get(f"r{slot}-{key}", "").strip()
            if raw:
                scores[key] = int(raw) if raw.isdigit() else raw
        version = data.get(f"r{slot}-version", "")
        inputs.append(
            RatingInput(
                slot=slot,
                scores=scores,
                hallucination=data.get(f"r{slot}-hallucination") in ("on", "1", "true"),
                error_types=set(data.getlist(f"r{slot}-errors")),
                version=int(version) if version.isdigit() else None,
            )
        )
    return inputs


@dataclass
class SlotView:
    """What the rating page shows for one response: its number, text and current choices."""

    slot: int
    text: str
    scores: dict[str, Any] = field(default_factory=dict)
    hallucination: bool = False
    error_types: set[str] = field(default_factory=set)
    version: int | None = None
    criteria: list[dict[str, Any]] = field(default_factory=list)

    def fill_criteria(self, likert: list[dict[str, Any]]) -> None:
        """Each criterion with its points as (value, anchor text, checked) for the template."""
        self.criteria = [
            {
                "key": c["key"], "label": c["label"], "help": c.get("help", ""),
                "points": [
                    (point, c["anchors"][point], str(self.scores.get(c["key"], "")) == point)
                    for point in sorted(c["anchors"], key=int)
                ],
            }
            for c in likert
        ]  # fmt: skip


def slot_views(assignment: Assignment, posted: list[RatingInput] | None = None) -> list[SlotView]:
    """The responses in this rater's order; choices from the form just posted (when it is
    shown again with an error) or else from the saved ratings."""
    texts = dict(assignment.item.responses.values_list("pk", "text"))
    saved = slot_ratings(assignment)
    views = []
    for slot, response_id in enumerate(assignment.order, start=1):
        view = SlotView(slot=slot, text=texts[response_id])
        rating = saved.get(slot)
        if rating is not None:
            view.scores = dict(rating.scores)
            view.hallucination = rating.hallucination
            view.error_types = set(rating.error_types)
            view.version = rating.version
        if posted:
            mine = posted[slot - 1]
            view.scores, view.hallucination = dict(mine.scores), mine.hallucination
            view.error_types = set(mine.error_types)
        view.fill_criteria(assignment.round.criteria["likert"])
        views.append(view)
    return views
