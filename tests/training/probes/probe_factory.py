"""Small probe sets written through the real ``ProbeSetWriter``, for the scorer's tests and
benchmarks: ``write_probe_set(folder, [("dog", "yes", "random"), ...])``."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from training.probes.layout import Probe, ProbeSetWriter


def png(seed: int, size: int = 48) -> bytes:
    """A small solid-colour PNG, different for each seed."""
    colour = ((seed * 70 + 10) % 256, (seed * 130 + 20) % 256, (seed * 200 + 30) % 256)
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def question(obj: str) -> str:
    article = "an" if obj[0] in "aeiou" else "a"
    return f"Is there {article} {obj} in the image?"


def write_probe_set(
    folder: Path,
    rows: Sequence[tuple[str, str, str]],
    *,
    images: int = 4,
    set_id: str = "probes-test",
    image_size: int = 48,
) -> dict[str, Any]:
    """One probe per ``(object, gold answer, split)``, images assigned round-robin; returns
    the manifest (``finish(..., lmms_eval=False)``: the task export is not under test here)."""
    with ProbeSetWriter(folder) as out:
        shas = []
        for n in range(images):
            data = png(n, image_size)
            sha = hashlib.sha256(data).hexdigest()
            out.add_image(sha, data, "png")
            shas.append(sha)
        for n, (obj, answer, split) in enumerate(rows):
            out.add(
                Probe(
                    id=str(n),
                    image=shas[n % images],
                    question=question(obj),
                    answer=answer,
                    kind="pope",
                    split=split,
                    object=obj,
                )
            )
        return out.finish(
            {"id": set_id, "kind": "pope", "split": "mixed", "seed": 0}, lmms_eval=False
        )
