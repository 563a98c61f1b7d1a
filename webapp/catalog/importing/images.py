"""Image files of an import: find them under the images folder, check them, store them.

Checking happens in a first pass that keeps nothing but the facts (sha256, size, format), so
an import of a million images does not hold a million files in memory, and an import that
aborts has written nothing, not even to storage. Storing is a second pass over the images that
passed, after validation: the file is read again (the page cache makes this cheap) and its
hash compared, so a file changed in between is noticed instead of stored under a wrong name.

Both passes run in a thread pool: Pillow's decoders, hashlib and file I/O release the GIL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from webapp.catalog.importing.plan import ImageSpec
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import RecordError
from workers.imaging import ImageInfo, ImageProblem, inspect_image

T = TypeVar("T")

URL_REFUSED = (
    "URLs are not downloaded: fetch the images first (for example with img2dataset) "
    "and give their local paths"
)
# One thread per core: decoding a 640x480 JPEG releases the GIL and two threads check twice
# as many images a second; more threads only fight over the GIL for the Python around it.
WORKERS = os.cpu_count() or 2
# Storing waits on the file system or the network (S3), not on the CPU.
STORE_WORKERS = 8
# Futures are created a slice at a time so memory stays flat however many images there are.
SLICE = 1024


class ImagesChanged(Exception):
    """A file's bytes changed between the check and the store; the import must be rerun."""


@dataclass(frozen=True, slots=True)
class LoadedImage:
    path: Path
    info: ImageInfo


def slices(items: Sequence[T], size: int = SLICE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def resolve(root: Path, relative: str) -> Path:
    """``relative`` under ``root``; refuses URLs and paths that climb out of ``root``.

    The check is on the written path, not on where symlinks lead, so an administrator may
    link a dataset folder into place.
    """
    if "://" in relative:
        raise ValueError(f"{relative!r} is a URL; {URL_REFUSED}")
    normal = os.path.normpath(relative)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        raise ValueError(f"{relative!r} points outside the images folder {root}")
    return root / normal


def _inspect(spec: ImageSpec, root: Path, max_pixels: int) -> LoadedImage | RecordError:
    def error(reason: str, field: str = "") -> RecordError:
        return RecordError(spec.file, spec.where, field or spec.path_field, reason)

    data = None
    tried = []
    for relative in spec.paths:
        try:
            path = resolve(root, relative)
        except ValueError as exc:
            return error(str(exc))
        tried.append(str(path))
        try:
            data = path.read_bytes()
            break
        except FileNotFoundError:
            continue
        except OSError as exc:
            return error(f"cannot read image file {path}: {exc}")
    if data is None:
        return error("image file not found: " + " or ".join(tried))
    try:
        info = inspect_image(data, max_pixels=max_pixels)
    except ImageProblem as exc:
        return error(f"image file {path}: {exc}")
    for name, declared, actual in (
        ("width", spec.width, info.width),
        ("height", spec.height, info.height),
    ):
        if declared is not None and declared != actual:
            return error(
                f"the annotation says {spec.width}x{spec.height} but the image file {path} "
                f"is {info.width}x{info.height}",
                field=name,
            )
    return LoadedImage(path, info)


def inspect_all(
    specs: Iterable[ImageSpec],
    root: Path,
    *,
    max_pixels: int,
    progress: Progress | None = None,
) -> tuple[dict[str, LoadedImage], list[RecordError]]:
    """Read and check every image; returns the good ones by spec key, and one error per bad."""
    specs = list(specs)
    loaded: dict[str, LoadedImage] = {}
    errors: list[RecordError] = []
    done = 0
    with ThreadPoolExecutor(WORKERS) as pool:
        for part in slices(specs):
            for spec, result in zip(
                part, pool.map(lambda s: _inspect(s, root, max_pixels), part), strict=True
            ):
                if isinstance(result, RecordError):
                    errors.append(result)
                else:
                    loaded[spec.key] = result
            done += len(part)
            if progress:
                progress("checking images", done, len(specs))
    return loaded, errors


def _store(image: LoadedImage) -> bool:
    """Put the bytes at their content-addressed name unless they are there; True if written."""
    name = image.info.storage_path
    if default_storage.exists(name):
        return False
    data = image.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != image.info.sha256:
        raise ImagesChanged(f"image file {image.path} changed during the import; run it again")
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:
        # Another import stored the same bytes a moment ago; ours got a suffixed copy.
        default_storage.delete(saved)
        return False
    return True


def store_all(images: Iterable[LoadedImage], *, progress: Progress | None = None) -> int:
    """Store the bytes of ``images`` (each sha256 once); returns how many files were written."""
    unique = list({image.info.sha256: image for image in images}.values())
    written = done = 0
    with ThreadPoolExecutor(STORE_WORKERS) as pool:
        for part in slices(unique):
            written += sum(pool.map(_store, part))
            done += len(part)
            if progress:
                progress("storing images", done, len(unique))
    return written
