"""Error-correction trajectories (preprint §3.3, §4.1.2): Q, the chain A_0, F_0, A_1, ... and
the final corrected answer, made by the answer-critique-revise loop and made right by people.

A trajectory and its steps are edited as one document: ``Trajectory.version`` covers the
steps too, so an edit to any step carries the trajectory's version and a stale one is a
conflict (``webapp.core.versioning``). Every change keeps the whole document before and after
in ``TrajectoryChange``, as regions keep theirs in ``RegionChange``.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Trajectory(models.Model):
    class Status(models.TextChoices):
        GENERATED = "generated"
        IN_REVIEW = "in_review"
        APPROVED = "approved"
        REJECTED = "rejected"

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"  # the RM said "No further corrections needed."
        MAX_STEPS = "max_steps"  # the loop ran K revisions without the RM accepting
        NONE = ""  # written or imported by people

    dataset = models.ForeignKey("catalog.Dataset", on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(
        "catalog.Image", on_delete=models.CASCADE, related_name="trajectories"
    )
    question_item = models.ForeignKey(
        "catalog.QuestionItem",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="trajectories",
    )
    question = models.TextField()
    reference_answer = models.TextField(blank=True)
    final_answer = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.GENERATED)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    # Seeded errors: the error type injected into the reference answer to make A_0 ("" if none).
    seeded_error = models.CharField(max_length=16, blank=True)
    # Provenance: the run, M and RM model ids and the prompt template versions.
    run = models.ForeignKey(
        "jobs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="trajectories"
    )
    model_id = models.CharField(max_length=255, blank=True)
    rm_id = models.CharField(max_length=255, blank=True)
    prompt_versions = models.JSONField(default=dict, blank=True)
    # Idempotent imports and generation retries: one trajectory per (image, source_key).
    source_key = models.CharField(max_length=128, blank=True)
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
                fields=["image", "source_key"],
                condition=~Q(source_key=""),
                name="trajectory_source_key_per_image",
            )
        ]
        indexes = [
            models.Index(fields=["dataset", "status", "id"], name="trajectory_queue"),
            models.Index(fields=["run"], name="trajectory_run"),
        ]

    def __str__(self) -> str:
        return f"trajectory {self.pk} ({self.status})"


class TrajectoryStep(models.Model):
    """Step k: the response A_k and the feedback F_k on it, who wrote each, A_k's error types."""

    trajectory = models.ForeignKey(Trajectory, on_delete=models.CASCADE, related_name="steps")
    k = models.PositiveIntegerField()
    response = models.TextField()
    feedback = models.TextField(blank=True)
    response_by = models.CharField(max_length=255, blank=True)  # a model id or "user:<name>"
    feedback_by = models.CharField(max_length=255, blank=True)
    error_types = models.JSONField(default=list, blank=True)
    m_latency_ms = models.FloatField(null=True, blank=True)
    rm_latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trajectory", "k"], name="trajectory_step_k")
        ]
        ordering = ["trajectory", "k"]

    def __str__(self) -> str:
        return f"step {self.k} of trajectory {self.trajectory_id}"


class TrajectoryChange(models.Model):
    """One change to a trajectory: who or what, when, the whole document before and after."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"

    trajectory = models.ForeignKey(
        Trajectory, on_delete=models.DO_NOTHING, db_constraint=False, related_name="changes"
    )
    action = models.CharField(max_length=8, choices=Action.choices)
    version = models.PositiveIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    run = models.ForeignKey(
        "jobs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["trajectory", "at"], name="trajchange_traj_at")]
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.action} trajectory {self.trajectory_id} v{self.version}"


class TrajectoryLease(models.Model):
    """A trajectory handed to one editor until ``expires_at`` (``webapp.core.leases``)."""

    trajectory = models.OneToOneField(Trajectory, on_delete=models.CASCADE, related_name="lease")
    dataset = models.ForeignKey(
        "catalog.Dataset", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField()
    claimed_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["dataset", "expires_at"], name="trajlease_ds_expires")]

    def __str__(self) -> str:
        return f"trajectory {self.trajectory_id} leased to {self.user_id}"
