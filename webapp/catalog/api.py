"""REST API for datasets and images, and the upload that feeds an importer.

Lists are keyset-paginated on the id and run a fixed number of SQL queries whatever the page
or the data size: counts are correlated subqueries computed only for the rows of the page,
and related objects are sent as ids (``dataset``), which needs no join.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.catalog.importing import (
    import_captions,
    import_coco,
    import_llava,
    import_vg,
)
from webapp.catalog.models import Dataset, Image
from webapp.catalog.queries import count_of
from webapp.catalog.services import set_dataset_access
from webapp.core.api import FilteredListMixin, id_param, list_schema
from webapp.core.http import upload_name, write_upload
from webapp.core.importing.report import ImportFailed, RecordError
from webapp.core.policy import is_curator, scope
from webapp.core.roles import ANNOTATOR
from webapp.regions.review_marks import mark_images

# An uploaded image archive may expand to at most this much, in this many members. Far above a
# real upload (big collections are imported from a folder with the management commands), far
# below what a zip bomb claims; checked on the zip's directory before anything is written.
MAX_ARCHIVE_BYTES = 20 * 1024**3
MAX_ARCHIVE_MEMBERS = 500_000
COPY_CHUNK = 1024 * 1024

# The annotation files each format takes: (form field, which is also the importer keyword,
# required).
IMPORT_FILES: dict[str, tuple[tuple[str, bool], ...]] = {
    "coco": (("instances", True), ("captions", False)),
    "vg": (("regions", True), ("image_data", True)),
    "captions": (("file", True),),
    "llava": (("file", True),),
}
ANNOTATION_FIELDS = ("instances", "captions", "regions", "image_data", "file")
IMPORTERS: dict[str, Callable[..., Any]] = {
    "coco": import_coco,
    "vg": import_vg,
    "captions": import_captions,
    "llava": import_llava,
}


# --- Serializers ------------------------------------------------------------------------------


class DatasetSerializer(serializers.ModelSerializer):
    image_count = serializers.IntegerField(read_only=True)
    annotators = serializers.SerializerMethodField(
        help_text="Usernames on the access list; shown to curators only (else null)."
    )

    class Meta:
        model = Dataset
        fields = ["id", "name", "description", "created_at", "image_count", "restricted"]
        fields += ["annotators"]

    def get_annotators(self, dataset: Dataset) -> list[str] | None:
        request = self.context.get("request")
        if request is None or not is_curator(request.user):
            return None
        return sorted(access.user.get_username() for access in dataset.access.all())


class DatasetAccessSerializer(serializers.Serializer):
    """What a curator may change on a dataset: who may open it. Validates only."""

    restricted = serializers.BooleanField(
        help_text="true: only the annotators listed (and curators) see the dataset."
    )
    annotators = serializers.SlugRelatedField(
        slug_field="username",
        many=True,
        required=False,
        queryset=get_user_model().objects.filter(groups__name=ANNOTATOR),
        help_text="Usernames of annotators; the list replaces the one the dataset had.",
    )


class ImageSerializer(serializers.ModelSerializer):
    thumbnail_url = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "dataset",
            "sha256",
            "width",
            "height",
            "format",
            "file_name",
            "uri",
            "captions",
            "source",
            "source_id",
            "split",
            "metadata",
            "thumbnail_url",
            "file_url",
            "exhaustively_reviewed_at",
            "exhaustively_reviewed_by",
        ]
        read_only_fields = ["exhaustively_reviewed_at", "exhaustively_reviewed_by"]

    def _url(self, name: str, image: Image) -> str:
        path = reverse(name, args=[image.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_thumbnail_url(self, image: Image) -> str:
        return self._url("catalog:image_thumb", image)

    def get_file_url(self, image: Image) -> str:
        return self._url("catalog:image_file", image)


class ReviewMarkSerializer(serializers.Serializer):
    """Which images to mark exhaustively reviewed (or clear). Validates only."""

    images = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=10_000,
        help_text="Image ids; those you may not open count as missing.",
    )
    reviewed = serializers.BooleanField(help_text="true marks the images, false clears them.")


class ReviewMarkResultSerializer(serializers.Serializer):
    changed = serializers.IntegerField(help_text="Images marked (or cleared) now.")
    unchanged = serializers.IntegerField(help_text="Images already in that state.")
    pending = serializers.IntegerField(
        help_text="Images not marked because some of their regions are still pending."
    )
    missing = serializers.IntegerField(help_text="Ids of no image you may open.")


class ImageFilter(serializers.Serializer):
    dataset = id_param("Only images of this dataset (its id).")


class ImportUploadSerializer(serializers.Serializer):
    """The multipart form of an import: which files a format needs, checked before any I/O."""

    dataset = serializers.SlugField(
        max_length=100, allow_unicode=True, help_text="Dataset name; created when new."
    )
    format = serializers.ChoiceField(choices=sorted(IMPORT_FILES))
    on_error = serializers.ChoiceField(
        choices=["abort", "skip"],
        default="abort",
        help_text="abort: a bad record writes nothing; skip: import the good records.",
    )
    images = serializers.FileField(help_text="A .zip of the image files.")
    instances = serializers.FileField(required=False, help_text="coco: instances JSON.")
    captions = serializers.FileField(required=False, help_text="coco: captions JSON (optional).")
    regions = serializers.FileField(required=False, help_text="vg: region_descriptions.json.")
    image_data = serializers.FileField(required=False, help_text="vg: image_data.json.")
    file = serializers.FileField(
        required=False, help_text="captions: JSONL, CSV or Parquet; llava: conversations JSON."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        wanted = dict(IMPORT_FILES[attrs["format"]])
        errors: dict[str, str] = {}
        for field in ANNOTATION_FIELDS:
            if field in wanted and wanted[field] and field not in attrs:
                errors[field] = f"This file is required for format {attrs['format']!r}."
            elif field not in wanted and field in attrs:
                errors[field] = f"Format {attrs['format']!r} does not take this file."
        if errors:
            raise ValidationError(errors)
        return attrs


class ImportErrorSerializer(serializers.Serializer):
    """One bad record; ``record`` and ``field`` are blank when the whole file is at fault."""

    file = serializers.CharField(allow_blank=True)
    record = serializers.CharField(allow_blank=True)
    field = serializers.CharField(allow_blank=True)
    reason = serializers.CharField()


class ImportResultSerializer(serializers.Serializer):
    dataset = serializers.CharField()
    format = serializers.CharField()
    run = serializers.IntegerField(allow_null=True, help_text="The import run's id.")
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="New and existing images, regions, ..."
    )
    errors = ImportErrorSerializer(many=True, help_text="Records skipped with on_error=skip.")


class ImportFailureSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = ImportErrorSerializer(many=True)


# --- Upload handling --------------------------------------------------------------------------


class UnsafeArchive(ValueError):
    """The image archive is not a zip we are willing to expand."""


def _member_path(name: str) -> PurePosixPath:
    """The relative path of a zip member, or ``UnsafeArchive`` for one that would escape."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"member {name!r} points outside the archive ('..')")
    return path


def extract_zip(source: Any, dest: Path) -> int:
    """Expand the zip ``source`` (a path or a seekable file) into ``dest``; return files written.

    The zip's directory is checked before anything is expanded: no absolute or ``..`` paths,
    at most ``MAX_ARCHIVE_MEMBERS`` members and ``MAX_ARCHIVE_BYTES`` in all. The declared
    sizes can be trusted because ``zipfile`` reads no more than a member's declared size and
    then checks its CRC, so a member that lies about its size fails instead of filling the disk.
    ``dest`` should be a fresh temporary folder: a member that fails half-way leaves files.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchive(f"not a readable zip file ({exc})") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchive(f"{len(members)} members; at most {MAX_ARCHIVE_MEMBERS} allowed")
        expanded = sum(m.file_size for m in members)
        if expanded > MAX_ARCHIVE_BYTES:
            raise UnsafeArchive(f"expands to {expanded} bytes; at most {MAX_ARCHIVE_BYTES} allowed")
        files = [(m, _member_path(m.filename)) for m in members if not m.is_dir()]
        for member, relative in files:
            target = dest.joinpath(*relative.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "xb") as out:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                raise UnsafeArchive(f"member {member.filename!r} cannot be read: {exc}") from exc
    return len(files)


def _images_root(folder: Path) -> Path:
    """A zip of one top-level folder (``val2017/…``) is read from inside that folder."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _save_upload(upload: UploadedFile, folder: Path) -> Path:
    folder.mkdir()
    return write_upload(upload, folder / upload_name(upload, "upload"))


class ImportRefused(Exception):
    """The importer aborted: nothing was written; ``errors`` name file, record and field."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class PathsShown:
    """Rewrites temporary paths in importer errors into the names the uploader sent.

    The importer names files by the paths it was given, which here are in a temporary folder
    that is gone once the answer is sent: ``/tmp/fgam-import-x/instances/coco.json`` becomes
    ``coco.json`` and ``/tmp/fgam-import-x/images/a/1.png`` becomes ``images.zip/a/1.png``.
    """

    def __init__(self, tmp: Path, archive_name: str) -> None:
        self.prefixes = [(f"{tmp / field}{os.sep}", "") for field in ANNOTATION_FIELDS]
        self.prefixes.append((f"{tmp / 'images'}{os.sep}", f"{archive_name}/"))
        self.prefixes.append((str(tmp), "upload"))

    def __call__(self, text: str) -> str:
        for prefix, shown in self.prefixes:
            text = text.replace(prefix, shown)
        return text

    def errors(self, errors: list[RecordError]) -> list[dict[str, str]]:
        return [
            {
                "file": self(error.file),
                "record": error.record,
                "field": error.field,
                "reason": self(error.reason),
            }
            for error in errors
        ]


def run_upload_import(data: dict[str, Any], *, user: Any) -> dict[str, Any]:
    """Save the validated upload to a temporary folder, expand the images and run the importer.

    Everything on disk is gone when this returns: the importer has copied the image bytes it
    kept into storage. Raises ``UnsafeArchive`` for a refused zip, and ``ImportRefused`` with
    the errors, paths as the uploader knows them, when the importer aborts.
    """
    with TemporaryDirectory(prefix="fgam-import-") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[str, Path | None] = {}
        for field, _required in IMPORT_FILES[data["format"]]:
            upload = data.get(field)
            files[field] = _save_upload(upload, tmp / field) if upload else None
        images = tmp / "images"
        images.mkdir()
        extract_zip(data["images"], images)
        shown = PathsShown(tmp, data["images"].name)
        importer = IMPORTERS[data["format"]]
        try:
            report = importer(
                dataset=data["dataset"],
                images=_images_root(images),
                on_error=data["on_error"],
                user=user,
                **files,
            )
        except ImportFailed as exc:
            raise ImportRefused(shown(str(exc)), shown.errors(exc.report.errors)) from exc
        return {
            "dataset": report.dataset,
            "format": report.format,
            "run": report.run_id,
            "counts": report.counts(),
            "errors": shown.errors(report.errors),
        }


# --- Views ------------------------------------------------------------------------------------


class DatasetViewSet(mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Datasets with their image counts; curators add to them through ``imports`` and set who
    may open them with ``PATCH {"restricted": true, "annotators": ["ann"]}``."""

    serializer_class = DatasetSerializer
    policy_resource = "datasets"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Dataset]:
        # A correlated COUNT(*), evaluated only for the datasets on the page; the access list
        # in one more query, for curators only.
        datasets = scope(Dataset.objects.all(), self.request.user, "")
        if is_curator(self.request.user):
            datasets = datasets.prefetch_related("access__user")
        return datasets.annotate(image_count=count_of(Image.objects.all(), "dataset"))

    @extend_schema(request=DatasetAccessSerializer, responses={200: DatasetSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        dataset = self.get_object()
        access = DatasetAccessSerializer(data=request.data)
        access.is_valid(raise_exception=True)
        annotators = access.validated_data.get("annotators")
        set_dataset_access(
            dataset=dataset,
            restricted=access.validated_data["restricted"],
            annotators=[a.user for a in dataset.access.all()] if annotators is None else annotators,
            by=request.user,
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=dataset.pk)).data)

    @extend_schema(
        request={"multipart/form-data": ImportUploadSerializer},
        responses={
            201: ImportResultSerializer,
            400: OpenApiResponse(
                ImportFailureSerializer,
                description="The importer refused the data (each error names file, record and "
                "field), or the form or the zip is invalid (errors keyed by form field).",
            ),
            403: OpenApiResponse(
                description="The user lacks the curator role; nothing of the upload was read."
            ),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="imports",
        parser_classes=[MultiPartParser],
        pagination_class=None,
    )
    def imports(self, request: Request) -> Response:
        """Import an uploaded annotation file and a zip of its images, synchronously."""
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        try:
            result = run_upload_import(upload.validated_data, user=request.user)
        except UnsafeArchive as exc:
            raise ValidationError({"images": [str(exc)]}) from exc
        except ImportRefused as exc:
            body = {"detail": exc.detail, "errors": exc.errors}
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        return Response(result, status=status.HTTP_201_CREATED)


@extend_schema_view(list=list_schema(ImageSerializer, ImageFilter))
class ImageViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Images, filtered by ``?dataset=ID``; thumbnails and bytes are served by the web app."""

    serializer_class = ImageSerializer
    policy_resource = "images"
    filter_serializer_class = ImageFilter
    filter_lookups = {"dataset": "dataset_id"}

    def get_queryset(self) -> QuerySet[Image]:
        return scope(Image.objects.all(), self.request.user, "dataset")

    @extend_schema(request=ReviewMarkSerializer, responses={200: ReviewMarkResultSerializer})
    @action(
        detail=False,
        methods=["post"],
        url_path="exhaustively-reviewed",
        pagination_class=None,
    )
    def exhaustively_reviewed(self, request: Request) -> Response:
        """Mark many images exhaustively reviewed, or clear them (``webapp.regions.review_marks``:
        images with pending regions are not marked; these writes are not on any undo stack)."""
        body = ReviewMarkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        counts = mark_images(
            images=self.get_queryset(),
            image_ids=body.validated_data["images"],
            reviewed=body.validated_data["reviewed"],
            user=request.user,
        )
        return Response(counts.as_dict())
