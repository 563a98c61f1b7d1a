from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Region(models.Model):
    """A box on an image with its phrase and caption.

    The box is pixel ``[x0, y0, x1, y1]`` (docs/formats.md). The image's width and height
    are copied here so check constraints can hold the whole contract
    ``0 <= x0 < x1 <= width``, ``0 <= y0 < y1 <= height`` in the database itself.
    ``version`` grows with every change; writers send the version they read and get a
    conflict when it moved (optimistic concurrency). Every change after creation is kept in
    ``RegionChange``; bulk creation is recorded by the ``run`` the region points to.
    """

    class Origin(models.TextChoices):
        GT = "gt"
        DETECTOR = "detector"
        HUMAN = "human"

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    # No index of its own: region_image_status starts with image_id and serves the same lookups.
    image = models.ForeignKey(
        "catalog.Image", on_delete=models.CASCADE, related_name="regions", db_index=False
    )
    image_width = models.PositiveIntegerField()
    image_height = models.PositiveIntegerField()
    x0 = models.FloatField()
    y0 = models.FloatField()
    x1 = models.FloatField()
    y1 = models.FloatField()
    phrase = models.CharField(max_length=512, blank=True)
    caption = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True)
    origin = models.CharField(max_length=16, choices=Origin.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    flagged = models.BooleanField(default=False)
    flag_reason = models.CharField(max_length=64, blank=True)
    version = models.PositiveIntegerField(default=1)
    source_key = models.CharField(max_length=128, blank=True)
    # The link is kept by the application (Django applies SET_NULL itself) but not checked by
    # a database foreign key: that check costs one lookup per row at commit, a third of the
    # time of a bulk import, for a value the importer and the workers take from a Run they
    # have just created.
    run = models.ForeignKey(
        "jobs.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="regions",
        db_constraint=False,
    )
    # Indexed only where set (see Meta): bulk imports leave it NULL and pay nothing for it.
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(x0__gte=0, y0__gte=0, x0__lt=F("x1"), y0__lt=F("y1"))
                & Q(x1__lte=F("image_width"), y1__lte=F("image_height")),
                name="region_box_inside_image",
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=0, score__lte=1),
                name="region_score_0_1",
            ),
            models.UniqueConstraint(
                fields=["image", "source_key"],
                condition=~Q(source_key=""),
                name="region_source_key_per_image",
            ),
        ]
        indexes = [
            # Review queue: pending regions per image, and the per-image page.
            models.Index(fields=["image", "status"], name="region_image_status"),
            # Export: accepted regions in id order.
            models.Index(fields=["status", "id"], name="region_status_id"),
            models.Index(
                fields=["updated_by"],
                condition=Q(updated_by__isnull=False),
                name="region_updated_by",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phrase or 'region'} {self.box}"

    @property
    def box(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    def snapshot(self) -> dict:
        """The editable state, as stored in history before/after."""
        return {
            "box": self.box,
            "phrase": self.phrase,
            "caption": self.caption,
            "score": self.score,
            "origin": self.origin,
            "status": self.status,
            "flagged": self.flagged,
            "version": self.version,
        }


class RegionChange(models.Model):
    """One change to a region: who or what made it, when, and the state before and after.

    ``region_id`` is kept without a foreign-key constraint so the history of a deleted
    (human-drawn) region survives its deletion.
    """

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"

    region = models.ForeignKey(
        Region, on_delete=models.DO_NOTHING, db_constraint=False, related_name="changes"
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
        indexes = [models.Index(fields=["region", "at"], name="regionchange_region_at")]
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.action} region {self.region_id} v{self.version}"


class Lease(models.Model):
    """An image handed to one annotator for review until ``expires_at``.

    One row per image at most (the one-to-one key is the unique constraint that makes claiming
    race-free): a claim either takes over a row that is expired or already the claimer's with
    one conditional ``UPDATE``, or inserts a new row and loses cleanly to a concurrent insert
    with an ``IntegrityError``. An expired row is simply free; nothing needs to sweep it.
    """

    image = models.OneToOneField("catalog.Image", on_delete=models.CASCADE, related_name="lease")
    dataset = models.ForeignKey(
        "catalog.Dataset", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField()
    claimed_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The queue leaves out images leased live to someone else.
            models.Index(fields=["dataset", "expires_at"], name="lease_dataset_expires"),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} leased to {self.user_id} until {self.expires_at:%H:%M:%S}"


class QueueEntry(models.Model):
    """An image's place in the review queue: how many regions wait and how uncertain they are.

    ``priority`` is the smallest ``|score - box_threshold|`` over the image's pending regions
    that come from a pseudo-label run with a numeric threshold (NULL when none has one: ground
    truth and human regions come last). "Next image" is then an index scan on the partial
    indexes below instead of an aggregate over every pending region of the dataset.

    On PostgreSQL the rows are kept by statement-level triggers on ``regions_region`` (see
    ``migrations/0003_queue_and_undo.py``), not by the services: every writer of regions, from
    the review services to COPY in the importers and the pseudo-label workers, an ORM
    ``.update()`` or a raw SQL fix-up, passes through them, so the stored value cannot drift
    (the counters Label Studio keeps in Django signals did). SQLite, the zero-setup quick
    start, has no such triggers; there the queue falls back to the aggregate over regions.
    """

    image = models.OneToOneField(
        "catalog.Image", on_delete=models.CASCADE, primary_key=True, related_name="queue_entry"
    )
    dataset = models.ForeignKey(
        "catalog.Dataset", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    pending = models.PositiveIntegerField(default=0)
    priority = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            # Next by uncertainty: nearest the threshold first, NULLs last (btree's default).
            models.Index(
                fields=["dataset", "priority", "image"],
                condition=Q(pending__gt=0),
                name="queue_by_priority",
            ),
            # Next by image order.
            models.Index(
                fields=["dataset", "image"], condition=Q(pending__gt=0), name="queue_by_image"
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id}: {self.pending} pending, priority {self.priority}"


class UndoStep(models.Model):
    """One review action of one person on one image, as the history rows it wrote.

    Ctrl+Z takes the person's newest open step on the image and reverts its changes as new
    versions; the step is then closed. Kept in the database so the stack survives a reload
    (and a second tab). A step that cannot be undone any more because someone else changed
    one of its regions since is closed as ``superseded`` so Ctrl+Z moves on to the one before.
    """

    class Outcome(models.TextChoices):
        UNDONE = "undone"
        SUPERSEDED = "superseded"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(
        "catalog.Image", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    changes = models.JSONField(default=list)
    # A step that marked or cleared the image's exhaustive-review mark keeps the mark before
    # and after, ``{"before": {"at": iso | None, "by": id | None}, "after": {...}}``
    # (``webapp.regions.review_marks``); undoing it puts "before" back.
    review_mark = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["user", "image", "-id"],
                condition=Q(closed_at__isnull=True),
                name="undostep_open",
            ),
        ]

    def __str__(self) -> str:
        return f"undo step {self.pk} of user {self.user_id} on image {self.image_id}"
