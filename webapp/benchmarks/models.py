"""Benchmark jobs: a checkpoint (or any model spec) scored on a probe set, and its answers.

A ``BenchmarkJob`` runs ``python -m training bench`` once (``webapp.benchmarks.scoring``) and
keeps what the scorer wrote: ``metrics`` is ``metrics.json`` as it is, and every prediction
becomes one ``BenchmarkAnswer`` row joined with its probe.

Why a table of answers rather than reading ``predictions.jsonl`` on demand: the page filters
by split, object and parser and pages through the result; a table answers that with one
indexed query per page, whereas the files would be read and joined (probes x predictions) on
every page view. A probe set holds thousands of probes, so the rows cost little, and they are
written once, in bulk, when the job ends. Every answer is kept, right ones too, so the counts
on the page come from the same rows as the list.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

PARSERS = ("strict", "pope", "word")


class BenchmarkJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        # Asked to stop while running: the worker ends the scorer within a second.
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    class Queue(models.TextChoices):
        GPU = "gpu", "gpu (a local model)"
        LLM = "llm", "llm (an OpenAI-compatible endpoint)"

    OPEN = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)

    probe_set = models.ForeignKey(
        "probes.ProbeSet", on_delete=models.PROTECT, related_name="benchmarks"
    )
    # The model is a training job's final checkpoint, or a free spec (a folder, a hub id or
    # an endpoint "URL#MODEL"); ``model_spec`` is what the scorer was given in both cases.
    training_job = models.ForeignKey(
        "exports.TrainingJob",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="benchmarks",
    )
    model_spec = models.CharField(max_length=1024)
    queue = models.CharField(max_length=8, choices=Queue.choices, default=Queue.GPU)
    batch_size = models.PositiveIntegerField(default=8)
    concurrency = models.PositiveIntegerField(default=16)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="Score the first N.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    out_dir = models.CharField(max_length=1024, blank=True)
    command = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    returncode = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="metrics.json as written.")
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"benchmark #{self.pk} of {self.model_label} on {self.probe_set_id}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    @property
    def model_label(self) -> str:
        if self.training_job_id:
            return f"training job #{self.training_job_id}"
        return self.model_spec

    @property
    def percent(self) -> float:
        if not self.progress_total:
            return 0.0
        return round(100 * min(self.progress_done, self.progress_total) / self.progress_total, 1)


class BenchmarkAnswer(models.Model):
    """One probe and what the model answered, with the parse of each parser ("" unparsed)."""

    job = models.ForeignKey(BenchmarkJob, on_delete=models.CASCADE, related_name="answers")
    # The order in probes.jsonl: the list follows the set's own order and pages by it.
    position = models.PositiveIntegerField()
    probe_id = models.CharField(max_length=64)
    split = models.CharField(max_length=16)
    object = models.CharField(max_length=255)
    subject = models.CharField(max_length=255, blank=True)
    relation = models.CharField(max_length=32, blank=True)
    question = models.TextField()
    expected = models.CharField(max_length=3)
    answer = models.TextField(blank=True)
    # The scorer's own "parsed", then each parser of FORMATS.md side by side.
    parsed = models.CharField(max_length=3, blank=True)
    strict = models.CharField(max_length=3, blank=True)
    pope = models.CharField(max_length=3, blank=True)
    word = models.CharField(max_length=3, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    # Enough to draw the image and its boxes without opening the probe set.
    image_sha256 = models.CharField(max_length=64)
    image_uri = models.CharField(max_length=2048, blank=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    boxes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="benchmarkanswer_position"),
            models.UniqueConstraint(fields=["job", "probe_id"], name="benchmarkanswer_probe"),
        ]
        indexes = [
            models.Index(fields=["job", "split", "object", "position"], name="benchanswer_filter")
        ]

    def __str__(self) -> str:
        return f"{self.probe_id}: {self.answer[:40]!r}"

    def correct(self, parser: str = "strict") -> bool:
        return getattr(self, parser) == self.expected
