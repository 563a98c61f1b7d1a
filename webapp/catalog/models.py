from django.conf import settings
from django.db import models


class Dataset(models.Model):
    name = models.SlugField(max_length=100, unique=True, allow_unicode=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    restricted = models.BooleanField(
        default=False,
        help_text="Only the annotators listed in its access list (and curators) may open it.",
    )

    def __str__(self) -> str:
        return self.name


class DatasetAccess(models.Model):
    """An annotator named on a restricted dataset's access list (``Dataset.restricted``)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="access")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataset_access"
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "user"], name="dataset_access_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.dataset_id}"


class ImageQuerySet(models.QuerySet["Image"]):
    def exhaustively_reviewed(self) -> "ImageQuerySet":
        """Images whose every visible vocabulary object has an accepted box."""
        return self.filter(exhaustively_reviewed_at__isnull=False)


class Image(models.Model):
    """One image, content-addressed: its bytes live in storage under ``images/ab/<sha256>.ext``.

    ``storage_path`` is set when the bytes are in our storage; ``uri`` keeps where they came
    from (a source path or URL). Width and height never change for a given sha256, so regions
    copy them to let the database check their boxes.
    """

    class Split(models.TextChoices):
        NONE = "", "none"
        TRAIN = "train"
        VAL = "val"
        TEST = "test"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=16, blank=True)
    storage_path = models.CharField(max_length=512, blank=True)
    uri = models.CharField(max_length=2048, blank=True)
    file_name = models.CharField(max_length=512, blank=True)
    captions = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=64, blank=True)
    source_id = models.CharField(max_length=128, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    thumbnail_path = models.CharField(max_length=512, blank=True)
    run = models.ForeignKey(
        "jobs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when every visible object of the dataset's vocabulary has an accepted box, so a
    # name without a box on this image is really absent (the only source of "no" probes).
    exhaustively_reviewed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    exhaustively_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip

    objects = ImageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "sha256"], name="image_sha256_per_dataset"),
            models.CheckConstraint(
                condition=models.Q(width__gt=0, height__gt=0), name="image_size"
            ),
        ]
        indexes = [models.Index(fields=["dataset", "source", "source_id"])]

    def __str__(self) -> str:
        return self.file_name or self.sha256[:12]

    @property
    def caption(self) -> str:
        return self.captions[0] if self.captions else ""

    @property
    def is_exhaustively_reviewed(self) -> bool:
        return self.exhaustively_reviewed_at is not None


class QuestionItem(models.Model):
    """An (image, question) pair for Stage-2, with a reference answer when one is known."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="questions")
    question = models.TextField()
    # NULL means "no reference answer" (exported as null), which is not the same as "".
    reference = models.TextField(null=True, blank=True)  # noqa: DJ001
    source = models.CharField(max_length=64, blank=True)
    source_key = models.CharField(max_length=255)
    run = models.ForeignKey(
        "jobs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "source_key"], name="question_source_key"),
        ]

    def __str__(self) -> str:
        return self.question[:80]


class VocabularyAlias(models.Model):
    """A curator's mapping of a normalised phrase to a vocabulary name ("man" -> "person").

    ``phrase`` is stored already normalised (``catalog.vocabulary.normalise`` without aliases),
    so lookups are a plain dict access. Aliases are applied once, not chained.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="aliases")
    phrase = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "phrase"], name="alias_phrase_per_dataset"),
        ]
        ordering = ["phrase"]

    def __str__(self) -> str:
        return f"{self.phrase} -> {self.name}"
