"""Blind human evaluation rounds (preprint §4.8, Table 5; error analysis §4.6, Table 3).

A ``Round`` rates the ``Response`` of every ``System`` to every ``EvalItem``. Each item has
exactly ``raters_per_item`` ``Assignment`` rows, made when the round opens: one per seat. A
rater claims a free seat (never taken, or pending with a lapsed lease) with a conditional
``UPDATE`` under ``FOR UPDATE SKIP LOCKED`` (see ``assignment.py``), so an item can never have
more raters than seats, and a partial unique index on (item, rater) keeps one rater from
taking two seats of one item. A rater's ``Rating`` of one response is versioned; every change
keeps a ``RatingChange`` row.

System identity is curator-only: the rater-facing code reads responses only through the
per-assignment ``order`` and shows them as "Response 1..n".
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

LIKERT_POINTS = (1, 2, 3, 4, 5)


def default_criteria() -> dict[str, Any]:
    """The paper's criteria (§4.8): three 5-point scales, hallucination yes/no and the four
    error types of Table 3, each scale point with the anchor text raters see."""
    return {
        "likert": [
            {
                "key": "localization",
                "label": "Fine-grained localization accuracy",
                "help": "Does the response name and place the right objects and regions?",
                "anchors": {
                    "1": "Very poor: wrong or invented objects and places throughout",
                    "2": "Poor: mostly wrong about which objects are where",
                    "3": "Fair: the main object right, details or positions wrong",
                    "4": "Good: objects and positions right, a minor slip",
                    "5": "Excellent: every object, attribute and position is right",
                },
            },
            {
                "key": "coherence",
                "label": "Reasoning coherence",
                "help": "Do the steps follow from each other and from what is in the image?",
                "anchors": {
                    "1": "Very poor: no reasoning, or it contradicts itself",
                    "2": "Poor: major leaps or contradictions",
                    "3": "Fair: the gist follows, with gaps",
                    "4": "Good: sound, one small gap",
                    "5": "Excellent: every step follows and is grounded in the image",
                },
            },
            {
                "key": "quality",
                "label": "Overall quality",
                "help": "How useful and trustworthy is the answer as a whole?",
                "anchors": {
                    "1": "Very poor: useless or misleading",
                    "2": "Poor: more wrong than right",
                    "3": "Fair: usable with care",
                    "4": "Good: a reliable answer",
                    "5": "Excellent: as good as a careful person's answer",
                },
            },
        ],
        "hallucination": {
            "label": "Hallucination",
            "help": "The response states something the image does not show (a factual error).",
        },
        "error_types": [
            {"key": "object", "label": "Object", "shortcut": "o",
             "help": "Names an object that is not in the image."},
            {"key": "attribute", "label": "Attribute", "shortcut": "a",
             "help": "Wrong colour, size, count or other property of a real object."},
            {"key": "spatial", "label": "Spatial relation", "shortcut": "s",
             "help": "Wrong position or relation between objects (left of, above, inside)."},
            {"key": "reasoning", "label": "Reasoning", "shortcut": "r",
             "help": "A logical flaw: a conclusion that does not follow."},
        ],
    }  # fmt: skip


class Round(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    raters_per_item = models.PositiveSmallIntegerField(default=3)
    seed = models.IntegerField(default=0, help_text="Seeds the item sample and response orders.")
    baseline = models.ForeignKey(
        "evaluation.System", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    criteria = models.JSONField(default=default_criteria)
    # Where the items came from: a dataset version (with the sample's size and strata), or a file.
    version = models.ForeignKey(
        "exports.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT,
        related_name="evaluation_rounds",
    )  # fmt: skip
    sampling = models.JSONField(default=dict, blank=True)
    lease_seconds = models.PositiveIntegerField(default=900)
    # The statistics frozen when the round closed (``stats.Results.as_dict()``); live until then.
    results = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(raters_per_item__gte=1, raters_per_item__lte=20),
                name="round_raters_per_item_range",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def likert_keys(self) -> list[str]:
        return [c["key"] for c in self.criteria.get("likert", [])]

    @property
    def error_type_keys(self) -> list[str]:
        return [e["key"] for e in self.criteria.get("error_types", [])]


def new_system_key() -> str:
    return secrets.token_hex(8)


class System(models.Model):
    """One model (checkpoint or external) whose responses are rated. Curator-only."""

    class Source(models.TextChoices):
        IMPORTED = "imported"
        RECTIFY = "rectify"

    class Status(models.TextChoices):
        READY = "ready"
        QUEUED = "queued"
        RUNNING = "running"
        FAILED = "failed"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="systems")
    name = models.CharField(max_length=200, help_text="Display name, shown to curators only.")
    key = models.CharField(max_length=32, default=new_system_key, editable=False)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.IMPORTED)
    # For generated responses: the rectify command's model and RM specs and K.
    generation = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    failures = models.JSONField(default=list, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["round", "name"], name="system_name_per_round"),
            models.UniqueConstraint(fields=["round", "key"], name="system_key_per_round"),
        ]

    def __str__(self) -> str:
        return self.name


class EvalItem(models.Model):
    """One (image, question) pair of a round."""

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=255, help_text="The item's id in its source file.")
    image = models.ForeignKey("catalog.Image", on_delete=models.PROTECT, related_name="+")
    question = models.TextField()
    reference = models.TextField(null=True, blank=True)  # noqa: DJ001 - null: no reference
    stratum = models.CharField(max_length=64, blank=True, help_text="Source, for stratifying.")
    position = models.PositiveIntegerField(help_text="Order in the sample.")

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["round", "key"], name="evalitem_key_per_round")
        ]

    def __str__(self) -> str:
        return f"{self.round_id}/{self.key}"


class Response(models.Model):
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="responses")
    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    detail = models.JSONField(default=dict, blank=True, help_text="e.g. rectify steps.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "system"], name="response_per_item_system")
        ]

    def __str__(self) -> str:
        return f"response {self.pk}"


class Assignment(models.Model):
    """One of an item's ``raters_per_item`` seats; ``rater`` is null until a rater claims it.

    ``order`` holds the ids of the item's responses in the order this rater sees them; it is
    internal (never rendered), the page and API show slots 1..n.
    """

    class Status(models.TextChoices):
        OPEN = "open"  # never claimed
        PENDING = "pending"  # claimed; free again once leased_until has passed
        DONE = "done"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="assignments")
    seat = models.PositiveSmallIntegerField()
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="evaluation_assignments",
    )  # fmt: skip
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    leased_until = models.DateTimeField(null=True, blank=True)
    order = models.JSONField(default=list, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    # How many times the seat was taken over after a lapsed lease (for the curator's page).
    handovers = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "seat"], name="assignment_seat"),
            models.UniqueConstraint(
                fields=["item", "rater"], condition=Q(rater__isnull=False),
                name="assignment_one_seat_per_rater",
            ),
            models.CheckConstraint(
                condition=Q(status="open", rater__isnull=True)
                | Q(status__in=["pending", "done"], rater__isnull=False),
                name="assignment_rater_matches_status",
            ),
        ]  # fmt: skip
        indexes = [
            models.Index(fields=["round", "status", "seat"], name="assignment_free"),
            models.Index(fields=["rater", "round", "status"], name="assignment_by_rater"),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk}"


class Rating(models.Model):
    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="ratings")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="ratings")
    scores = models.JSONField()
    hallucination = models.BooleanField(default=False)
    error_types = models.JSONField(default=list, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["assignment", "response"], name="rating_per_assignment_response"
            )
        ]

    def __str__(self) -> str:
        return f"rating {self.pk} v{self.version}"

    def snapshot(self) -> dict[str, Any]:
        return {
            "scores": dict(self.scores),
            "hallucination": self.hallucination,
            "error_types": sorted(self.error_types),
            "version": self.version,
        }


class RatingChange(models.Model):
    """History of a rating: who changed what, when (the first row is its creation)."""

    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="changes")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    at = models.DateTimeField(auto_now_add=True)
    version = models.PositiveIntegerField()
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField()

    class Meta:
        ordering = ["rating", "version"]

    def __str__(self) -> str:
        return f"rating {self.rating_id} v{self.version}"
