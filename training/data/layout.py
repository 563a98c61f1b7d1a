"""What a dataset version's layout defines without any heavy import (no torch, no Django):
the format name, ``content_sha256``, the held-out split and what a reference-mode ``uri``
stands for. ``training.data.version`` (the reader) and ``training.data.writer`` both use these,
and the web app's exporter (and the rectification CLI) import this module rather than the
reader so they do not load torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = "fgam-dataset"
SUPPORTED_FORMAT_VERSIONS = (1,)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(root: Path) -> str:
    """FORMATS.md's ``content_sha256``: sha256 of ``"<sha256>  <relpath>\\n"`` lines, sorted by
    path, for every file except ``manifest.json`` (what ``sha256sum`` prints)."""
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != "manifest.json"
    )
    text = "".join(f"{file_sha256(root / rel)}  {rel}\n" for rel in files)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` plus the folder's ``content_sha256``, written as ``manifest.json``, the
    last file of a version or probe set (the hash leaves it out)."""
    full = {**manifest, "content_sha256": content_sha256(root)}
    text = json.dumps(full, indent=2, sort_keys=True) + "\n"
    (root / "manifest.json").write_text(text, encoding="utf-8")
    return full


def key_in_holdout(key: str, fraction: float) -> bool:
    """Deterministic held-out split by key hash, stable across runs, ranks and machines.

    >>> key_in_holdout("abc", 0.0), key_in_holdout("abc", 1.0)
    (False, True)
    """
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
    return bucket < fraction


def uri_path(uri: str, root: Path) -> Path:
    """The local path a reference-mode ``uri`` stands for: a ``file://`` URI or a plain path,
    a relative one taken under ``root``. A remote URI gives a path that is no file.

    >>> [uri_path(u, Path("/v")).as_posix() for u in ("file:///data/a.png", "a.png")]
    ['/data/a.png', '/v/a.png']
    """
    local = Path(uri.removeprefix("file://"))
    return local if local.is_absolute() else root / local
