from django.conf import settings
from django.db import models
from django.utils import timezone


class Run(models.Model):
    """One piece of recorded work: an import, a pseudo-label or caption pass, a thumbnail batch.

    Every region, caption and trajectory points back to the run that made it, so the
    parameters, model and timings of any record can be looked up.
    """

    class Kind(models.TextChoices):
        IMPORT = "import"
        THUMBNAILS = "thumbnails"
        PSEUDO_LABEL = "pseudo_label"
        CAPTION = "caption"
        TRAJECTORY = "trajectory"
        EXPORT = "export"
        TRAINING = "training"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    dataset = models.ForeignKey(
        "catalog.Dataset", null=True, blank=True, on_delete=models.CASCADE, related_name="runs"
    )
    model_id = models.CharField(max_length=255, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveBigIntegerField(default=0)
    done = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Batched runs (pseudo-label, caption): when every batch was created, and the LLM tokens
    # used so far (summed with F() by each finishing batch; cost derives from the prices kept
    # in ``parameters`` at start).
    planned_at = models.DateTimeField(null=True, blank=True)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["dataset", "kind", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return (self.done + self.failed) / self.total if self.total else 0.0

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def elapsed_s(self) -> float | None:
        """Seconds since start: to the end for a finished run, to now for an open one."""
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def items_per_second(self) -> float | None:
        elapsed = self.elapsed_s
        processed = self.done + self.failed
        if not elapsed or not processed:
            return None
        return processed / elapsed

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None when unknown or not running."""
        rate = self.items_per_second
        if self.status != self.Status.RUNNING or not rate or self.planned_at is None:
            return None
        return max(self.total - self.done - self.failed, 0) / rate

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class RunBatch(models.Model):
    """One Celery task's share of a pseudo-label or caption run: a fixed list of item ids.

    Items are images for a pseudo-label run and regions for a caption run. The list is fixed
    when the run is planned, so a redelivered or retried batch does exactly the same work.
    ``status`` moves by conditional updates (``UPDATE ... WHERE status = X``), so only one
    finisher adds the batch's counts to its run even if two workers ran it.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # planned, not yet handed to Celery
        QUEUED = "queued"  # a task message is on its way
        RUNNING = "running"  # a worker claimed it
        DONE = "done"
        FAILED = "failed"  # the batch as a whole failed; every item counts as failed
        CANCELLED = "cancelled"
        RETRIED = "retried"  # its failed items were moved to a new batch

    OPEN = (Status.PENDING, Status.QUEUED, Status.RUNNING)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="batches")
    index = models.PositiveIntegerField()
    ids = models.JSONField(default=list)
    first_id = models.PositiveBigIntegerField()
    last_id = models.PositiveBigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Per-item failures: [{"id": <item id>, "error": "..."}]; ``error`` is a whole-batch one.
    errors = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="runbatch_index_per_run"),
        ]
        indexes = [models.Index(fields=["run", "status", "index"], name="runbatch_run_status")]
        ordering = ["run", "index"]

    def __str__(self) -> str:
        return f"run {self.run_id} batch {self.index} ({self.status})"

    @property
    def size(self) -> int:
        return len(self.ids)
