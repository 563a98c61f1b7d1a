"""Studies: the arms of an ablation (Table 2, Figure 1, Figure 2 or a custom list) trained on one
dataset version and scored on the same probe sets, in one place.

A ``Study`` keeps ``spec``, the ``study.json`` exactly as it was given (a plain file, so the same
study can be re-run on another version or planned with ``python -m training study-plan``).
Its ``StudyStep`` rows are the plan of ``training.studies.plan.plan_study``: one row per step
key (identical steps of several arms share one key, hence one row and one job). A step holds
at most one job at a time; ``retry`` clears a failed step's job link (the old job stays in its
own table, with its log) so that ``advance`` starts a new one.

Why the step's status is stored rather than read from its job every time: the study page and
``advance`` both ask "which steps are done" for every step, and one query on this table answers
it; the status is copied from the job whenever ``advance`` runs (each job's end triggers it).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"  # created, not started
        RUNNING = "running"
        DONE = "done"  # every step succeeded
        FAILED = "failed"  # some step failed and nothing else can run; retry it

    name = models.SlugField(max_length=64, unique=True)
    version = models.ForeignKey(
        "exports.DatasetVersion", on_delete=models.PROTECT, related_name="studies"
    )
    spec = models.JSONField(help_text="study.json as given.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    error = models.TextField(blank=True)
    evaluation_round = models.ForeignKey(
        "evaluation.Round",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="studies",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.name

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.RUNNING


# A training or benchmark job's status as a step's.
JOB_STATUS = {
    "queued": "queued", "running": "running", "cancelling": "running", "succeeded": "succeeded",
    "done": "succeeded", "failed": "failed", "cancelled": "failed",
}  # fmt: skip


class StudyStep(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # waits for the steps it needs, or for the study to start
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # its job failed or was cancelled, or it could not be started
        BLOCKED = "blocked"  # a step it needs failed

    FINISHED_OK = Status.SUCCEEDED
    OPEN = (Status.QUEUED, Status.RUNNING)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=255, help_text="The plan's step key.")
    kind = models.CharField(max_length=16)  # stage1 | sft | rl | hybrid | bench
    position = models.PositiveIntegerField(default=0, help_text="Order in the plan.")
    config = models.JSONField(default=dict, blank=True)
    needs = models.JSONField(default=list, blank=True)
    arms = models.JSONField(default=list, blank=True)
    # For bench steps: the step whose final checkpoint is scored ("" for the base model).
    model_from = models.CharField(max_length=255, blank=True)
    probe_set = models.ForeignKey(
        "probes.ProbeSet", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    training_job = models.ForeignKey(
        "exports.TrainingJob",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="study_steps",
    )
    benchmark_job = models.ForeignKey(
        "benchmarks.BenchmarkJob",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="study_steps",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    # A "tower" step (M with the Stage-1 tower swapped in, no training) has no job of its own:
    # the study runs ``python -m training swap-tower`` itself and keeps its folder and log here.
    out_dir = models.CharField(max_length=1024, blank=True)
    log_tail = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["study", "position"]
        constraints = [
            models.UniqueConstraint(fields=["study", "key"], name="studystep_key_per_study"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.key}"

    @property
    def job(self):
        return self.training_job or self.benchmark_job

    @property
    def is_bench(self) -> bool:
        return self.kind == "bench"

    @property
    def is_tower(self) -> bool:
        return self.kind == "tower"

    @property
    def has_run(self) -> bool:
        """A job linked, or (a tower step) a run of its own under way or done."""
        return self.job is not None or (
            self.is_tower
            and self.status != self.Status.PENDING
            and self.status != self.Status.BLOCKED
        )

    @property
    def live_status(self) -> str:
        """The status as its job says it now (the stored one is copied at each ``advance``, so
        a job that started running since shows here first)."""
        job = self.job
        if job is None:
            return self.status
        return JOB_STATUS.get(job.status, self.Status.QUEUED)

    @property
    def run_dir(self) -> str:
        """The step's run folder: its training job's, its benchmark's, or its own (tower)."""
        job = self.job
        return job.out_dir if job is not None else self.out_dir
