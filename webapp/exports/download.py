"""A ready version as one streamed tar: constant memory, files in the manifest-first order."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

from webapp.exports.models import DatasetVersion
from webapp.exports.storage import open_file

CHUNK = 1 << 20


def tar_stream(version: DatasetVersion, files: list[str]) -> Iterator[bytes]:
    for rel in files:
        with open_file(version, rel) as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(0)
            info = tarfile.TarInfo(f"{version.name}/{rel}")
            info.size = size
            info.mode = 0o644
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            while chunk := handle.read(CHUNK):
                yield chunk
            if size % tarfile.BLOCKSIZE:
                yield b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)
    yield b"\0" * (tarfile.BLOCKSIZE * 2)
