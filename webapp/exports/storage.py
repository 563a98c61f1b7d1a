"""Where version folders live: publishing a written one atomically, finding a ready one.

A version goes either into a folder given on the command line (storage ``path``) or under
``FGAM_VERSIONS_PREFIX`` in Django's default storage: a local filesystem, where one
``rename`` publishes it, or remote storage (S3), where every file is uploaded with
``manifest.json`` last. The readers at the end serve a ready version's files from wherever
it went, for downloads, the API and training jobs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage

from training.data.layout import content_sha256
from webapp.exports.models import DatasetVersion


class Target:
    """Where a version's folder goes, and how it gets there atomically."""

    def __init__(self, version: DatasetVersion) -> None:
        self.version = version

    def temporary(self) -> Path:
        raise NotImplementedError

    def remove_stale_temporaries(self) -> None:
        parent = self.temporary_parent()
        if parent.is_dir():
            for stale in parent.glob(f".tmp-{self.version.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def temporary_parent(self) -> Path:
        raise NotImplementedError

    def publish(self, tmp: Path, sha: str) -> str:
        raise NotImplementedError


class _FolderTarget(Target):
    """A local folder: write beside the final place, then one ``rename`` (atomic on POSIX)."""

    def __init__(self, version: DatasetVersion, parent: Path, location_of) -> None:
        super().__init__(version)
        self.parent = parent
        self.location_of = location_of

    def temporary_parent(self) -> Path:
        return self.parent

    def temporary(self) -> Path:
        self.parent.mkdir(parents=True, exist_ok=True)
        path = self.parent / f".tmp-{self.version.name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, sha: str) -> str:
        final = self.parent / self.version.name
        try:
            os.rename(tmp, final)
        except OSError:
            # Another delivery of the same task finished first: the content is deterministic,
            # so an existing complete copy with the same hash is this version.
            if (final / "manifest.json").is_file() and content_sha256(final) == sha:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        return self.location_of(final)


class _StorageTarget(Target):
    """Remote storage (S3): write locally, upload every file, ``manifest.json`` last."""

    def __init__(self, version: DatasetVersion) -> None:
        super().__init__(version)
        self.prefix = f"{settings.FGAM_VERSIONS_PREFIX}/{version.name}"

    def temporary_parent(self) -> Path:
        return Path(settings.FGAM_EXPORT_TMP_DIR)

    def temporary(self) -> Path:
        parent = self.temporary_parent()
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f".tmp-{self.version.name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, sha: str) -> str:
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != "manifest.json")
        # A dead attempt may have left objects this one does not write (the data changed in
        # between, so fewer shards): they would be listed as the version's files. The version
        # is not ready, so nobody reads the prefix yet; clear it first.
        self._delete_prefix(self.prefix)
        for path in [*files, tmp / "manifest.json"]:
            name = f"{self.prefix}/{path.relative_to(tmp).as_posix()}"
            with path.open("rb") as handle:
                default_storage.save(name, File(handle))
        shutil.rmtree(tmp, ignore_errors=True)
        return self.prefix

    def _delete_prefix(self, prefix: str) -> None:
        try:
            dirs, names = default_storage.listdir(prefix)
        except FileNotFoundError:
            return
        for name in names:
            default_storage.delete(f"{prefix}/{name}")
        for folder in dirs:
            self._delete_prefix(f"{prefix}/{folder}")


def publish_target(version: DatasetVersion) -> Target:
    if version.storage == DatasetVersion.Storage.PATH:
        return _FolderTarget(version, Path(version.location), lambda final: str(final))
    try:
        root = Path(default_storage.path(settings.FGAM_VERSIONS_PREFIX))
    except NotImplementedError:
        return _StorageTarget(version)
    prefix = settings.FGAM_VERSIONS_PREFIX
    return _FolderTarget(version, root, lambda final: f"{prefix}/{final.name}")


# --- reading back -----------------------------------------------------------------------------


def version_files(version: DatasetVersion) -> list[str]:
    """Relative paths of a ready version's files, manifest first."""
    return ["manifest.json", *_list_files(version)]


def _list_files(version: DatasetVersion) -> list[str]:
    root = local_path(version)
    if root is not None:
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name != "manifest.json"
        )
    out: list[str] = []

    def walk(prefix: str) -> None:
        dirs, names = default_storage.listdir(prefix)
        out.extend(f"{prefix}/{n}"[len(version.location) + 1 :] for n in names)
        for d in dirs:
            walk(f"{prefix}/{d}")

    walk(version.location)
    return sorted(p for p in out if p != "manifest.json")


def local_path(version: DatasetVersion) -> Path | None:
    """The folder of a ready version when it is on this machine's filesystem."""
    if version.storage == DatasetVersion.Storage.PATH:
        return Path(version.location)
    try:
        return Path(default_storage.path(version.location))
    except NotImplementedError:
        return None


def open_file(version: DatasetVersion, rel: str):
    root = local_path(version)
    if root is not None:
        return (root / rel).open("rb")
    return default_storage.open(f"{version.location}/{rel}", "rb")
