"""A small probe set on disk, an endpoint that answers it from a script, and the figures that
script implies, computed by hand.

The probe set is written with the real writer (``training.probes.layout.ProbeSetWriter``),
so ``python -m training bench`` verifies and reads it as it would a built one. Its probes
cover two splits (the builder makes one split per set; the reader allows several, and the
pages filter by split), each object once, so the scripted server knows a probe by its object.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.workers.llm_server import LLMServer
from training.probes.layout import Probe, ProbeSetWriter
from webapp.probes.models import ProbeSet

W, H = 64, 48
# (object, gold answer, split, object box or None, image number)
PROBES = [
    ("dog", "yes", "random", [4, 4, 30, 40], 0),
    ("cat", "no", "random", None, 0),
    ("apple", "yes", "popular", [10, 10, 50, 40], 0),
    ("car", "no", "popular", None, 0),
    ("person", "yes", "random", [20, 5, 60, 45], 1),
    ("bird", "no", "random", None, 1),
    ("tree", "yes", "popular", [2, 2, 20, 30], 1),
    ("umbrella", "no", "popular", None, 1),
]
# What the scripted model says about each object, and how each parser reads it.
SCRIPT = {
    "dog": "Yes.",  # yes / yes / yes
    "cat": "no",  # no / no / no
    "apple": "There is not an apple.",  # unparsed / no / unparsed
    "car": "Yes, there is a car.",  # unparsed / yes / yes
    "person": "%$#@ garbage",  # unparsed / yes / unparsed
    "bird": "No.",  # no / no / no
    "tree": "yes",  # yes / yes / yes
    "umbrella": "Sure! Yes, I see one.",  # unparsed / yes / yes
}
# The probes each parser gets wrong (an unparsed answer is wrong), by object.
WRONG = {
    "strict": {"apple", "car", "person", "umbrella"},
    "pope": {"apple", "car", "umbrella"},
    "word": {"apple", "car", "person", "umbrella"},
}
# Hand-computed from the table above ("yes" positive; unparsed gold yes is a miss).
EXPECTED_ALL = {
    "strict": {"accuracy": 0.5, "precision": 1.0, "recall": 0.5, "f1": 2 / 3,
               "yes_ratio": 0.5, "unparsed": 4, "n": 8},
    "pope": {"accuracy": 0.625, "precision": 0.6, "recall": 0.75, "f1": 2 / 3,
             "yes_ratio": 0.625, "unparsed": 0, "n": 8},
    "word": {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5,
             "yes_ratio": 4 / 6, "unparsed": 2, "n": 8},
}  # fmt: skip
QUESTION = re.compile(r"Is there an? (\w+) in the image")


def question_for(obj: str) -> str:
    article = "an" if obj[0] in "aeiou" else "a"
    return f"Is there {article} {obj} in the image?"


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (W, H), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_probe_folder(root: Path, set_id: str = "bench-test") -> dict:
    import hashlib

    images = [_png((200, 40, 40)), _png((40, 160, 60))]
    shas = [hashlib.sha256(data).hexdigest() for data in images]
    with ProbeSetWriter(root) as out:
        for sha, data in zip(shas, images, strict=True):
            out.add_image(sha, data, "png")
        for n, (obj, answer, split, box, image) in enumerate(PROBES):
            out.add(
                Probe(
                    id=str(n), image=shas[image], question=question_for(obj), answer=answer,
                    kind="pope", split=split, object=obj, boxes=[box] if box else None,
                )
            )  # fmt: skip
        return out.finish(
            {"id": set_id, "kind": "pope", "split": "random", "seed": 0}, lmms_eval=False
        )


@pytest.fixture
def probe_set(tmp_path) -> ProbeSet:
    root = tmp_path / "probes" / "bench-test"
    manifest = write_probe_folder(root)
    return ProbeSet.objects.create(
        set_id="bench-test", kind="pope", split="random", status=ProbeSet.Status.READY,
        path=str(root), content_sha256=manifest["content_sha256"], counts=manifest["counts"],
        manifest=manifest,
    )  # fmt: skip


def scripted_answer(request) -> str:
    """The model's text for a chat request: the script's answer for the probe's object."""
    text = "\n".join(
        part.get("text", "")
        for message in request.get("messages", [])
        for part in (message["content"] if isinstance(message["content"], list) else [])
        if isinstance(part, dict)
    ) or "\n".join(str(m.get("content")) for m in request.get("messages", []))
    found = QUESTION.search(text)
    return SCRIPT[found.group(1)] if found else "unknown probe"


@pytest.fixture
def scripted_server():
    with LLMServer(responder=scripted_answer) as server:
        yield server


@pytest.fixture
def bench_dirs(tmp_path, settings):
    settings.FGAM_BENCHMARK_DIR = str(tmp_path / "benchmarks")
    return Path(settings.FGAM_BENCHMARK_DIR)
