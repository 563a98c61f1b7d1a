"""Probe sets: immutable, content-hashed yes/no benchmarks built from curated regions
(shared/FORMATS.md, "A probe set on disk"), and the images each one holds, for the leakage
guard (``webapp.probes.leakage``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ProbeSet(models.Model):
    """One probe-set folder. ``building`` while it is written into a hidden temporary folder,
    ``ready`` once the folder is complete and renamed into place (only then it has a ``path``
    and a ``content_sha256``), ``failed`` with ``error`` otherwise. A ready set never changes.
    """

    class Kind(models.TextChoices):
        POPE = "pope", "POPE (objects)"
        SPATIAL = "spatial", "Spatial relations"

    class Split(models.TextChoices):
        RANDOM = "random"
        POPULAR = "popular"
        ADVERSARIAL = "adversarial"
        SPATIAL = "spatial"

    class Status(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    # The folder name, made like a version name: "<UTC time>-<6 hex>".
    set_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    split = models.CharField(max_length=16, choices=Split.choices)
    seed = models.BigIntegerField(default=0)
    # What was asked: images, per_image, reference (the manifest has the same and more).
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    error = models.TextField(blank=True)
    datasets = models.ManyToManyField("catalog.Dataset", related_name="probe_sets")
    # Absolute folder of the ready set (under MEDIA_ROOT/FGAM_PROBES_PREFIX or --out DIR).
    path = models.CharField(max_length=1024, blank=True)
    content_sha256 = models.CharField(max_length=64, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    allow_seen = models.BooleanField(
        default=False,
        help_text="Built although a ready dataset version already holds some of its images.",
    )
    manifest = models.JSONField(default=dict, blank=True)
    progress_phase = models.CharField(max_length=32, blank=True)
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "-id"], name="probeset_status_id")]

    def __str__(self) -> str:
        return self.set_id

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY


class ProbeImage(models.Model):
    """An image sha256 a probe set holds: dataset versions cut afterwards leave it out."""

    probe_set = models.ForeignKey(ProbeSet, on_delete=models.CASCADE, related_name="image_rows")
    sha256 = models.CharField(max_length=64, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["probe_set", "sha256"], name="probeimage_once"),
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} in {self.probe_set_id}"
