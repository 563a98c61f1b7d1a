from django.conf import settings
from django.db import models


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

    class Meta:
        indexes = [models.Index(fields=["dataset", "kind", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return (self.done + self.failed) / self.total if self.total else 0.0

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
