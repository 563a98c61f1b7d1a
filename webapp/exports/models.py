"""Dataset versions (immutable, content-hashed exports), training jobs started from them, and
outgoing webhooks with their delivery log."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DatasetVersion(models.Model):
    """One cut of one or more datasets in the ``docs/formats.md`` layout.

    A version is ``queued`` when cut, ``running`` while a worker writes it into a temporary
    folder, and ``ready`` once its files are complete and in place: only then does it have a
    ``location``, a ``content_sha256`` and counts. Nothing about a ready version changes again.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    class Storage(models.TextChoices):
        STORAGE = "storage"  # through Django's default storage (local folder or S3)
        PATH = "path"  # a folder given on the command line (``export_version --out DIR``)

    name = models.CharField(max_length=64, unique=True)
    datasets = models.ManyToManyField("catalog.Dataset", related_name="versions")
    # Region filters and the split, exactly as the export applied them (see exports.filters).
    filters = models.JSONField(default=dict)
    reference = models.BooleanField(default=False, help_text="Records carry a uri, no bytes.")
    holdout_fraction = models.FloatField(default=0.0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    storage = models.CharField(max_length=16, choices=Storage.choices, default=Storage.STORAGE)
    # Where the complete version lives: a storage-relative prefix or an absolute folder.
    location = models.CharField(max_length=1024, blank=True)
    content_sha256 = models.CharField(max_length=64, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    derived_from = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="derivatives"
    )
    # "Train on export": a job config to start once the version is ready; empty for none.
    train_on_ready = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Progress while the version is cut (``webapp.exports.progress``): rows written (regions,
    # questions, trajectories) out of the total counted in the snapshot, and the phase.
    progress_phase = models.CharField(max_length=32, blank=True)
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    progress_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "-id"], name="version_status_id")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def is_open(self) -> bool:
        """Queued or being written: its page keeps polling for progress."""
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def progress_percent(self) -> float:
        if self.status == self.Status.READY:
            return 100.0
        if not self.progress_total:
            return 0.0
        return round(100.0 * min(self.progress_done, self.progress_total) / self.progress_total, 1)


class TrainingJob(models.Model):
    """A training run of ``python -m training ...`` on one exported version."""

    class Kind(models.TextChoices):
        STAGE1 = "stage1", "Stage-1"
        SFT = "stage2_sft", "Stage-2 SFT"
        RM = "rm", "RM training"
        RL = "rl", "RL"
        HYBRID = "hybrid", "Hybrid SFT→RL"
        ABLATION = "ablation", "Named ablation"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    OPEN = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)

    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.STAGE1)
    # Ablations name a preset of training/stage1/config.py (itcl_only, ...).
    preset = models.CharField(max_length=32, blank=True)
    config = models.JSONField(default=dict, blank=True)
    gpus = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    out_dir = models.CharField(max_length=1024, blank=True)
    command = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    last_step = models.PositiveIntegerField(default=0)
    returncode = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} on {self.version_id}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.out_dir}/final" if self.out_dir else ""


class TrainingMetric(models.Model):
    """One line of the job's ``metrics.jsonl`` (loss terms, throughput, learning rate)."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metrics")
    line = models.PositiveIntegerField(help_text="Line number in metrics.jsonl, from 0.")
    step = models.PositiveIntegerField()
    values = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "line"], name="trainingmetric_line_per_job")
        ]
        ordering = ["job", "line"]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"


class Webhook(models.Model):
    """An endpoint told when a version is ready or a training job ends (HMAC-signed POST)."""

    class Event(models.TextChoices):
        VERSION_READY = "version.ready"
        JOB_FINISHED = "job.finished"

    url = models.URLField(max_length=1024)
    secret = models.CharField(max_length=255)
    events = models.JSONField(default=list, help_text="Events to send; empty means all.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url

    def wants(self, event: str) -> bool:
        return self.active and (not self.events or event in self.events)


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32)
    body = models.TextField(help_text="The exact bytes signed and sent (UTF-8 JSON).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True, help_text="One entry per attempt.")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.event} to webhook {self.webhook_id} ({self.status})"
