"""LLaVA-Instruct conversations (``llava_instruct_150k.json`` and its kin) as Stage-2 questions.

Each human -> gpt pair of turns becomes a ``QuestionItem`` whose question is the human turn
without the ``<image>`` token and whose reference is the answer. Records without an image
(the text-only part of the mixes) are counted and skipped; they are no error.

In ``llava_instruct_150k.json`` an ``id`` is the COCO image's id, and the same id comes back
once per sub-collection (conversation, detail, reasoning). The second record with an id gets
keys ``llava:<id>#2:<turn>``, the third ``#3``, so every question has a key of its own that
is the same on every run over the same file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from webapp.catalog.importing.coco import guess_split
from webapp.catalog.importing.images import URL_REFUSED
from webapp.catalog.importing.pipeline import run_import
from webapp.catalog.importing.plan import ImageSpec, Plan, QuestionSpec
from webapp.core.importing.fields import (
    FileProblem,
    get_id,
    get_list,
    get_text,
    load_json,
    type_name,
)
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import BadField, ImportReport, RecordError

IMAGE_TOKEN = "<image>"
ASKER = ("human", "user")
ANSWERER = ("gpt", "assistant")
TEXT_ONLY = "text-only records skipped"


def import_llava(
    *,
    dataset: str,
    file: Path,
    images: Path,
    on_error: str = "abort",
    user: Any = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import LLaVA-Instruct conversations from ``file`` with images under ``images``."""
    return run_import(
        format="llava",
        dataset=dataset,
        images=images,
        on_error=on_error,
        user=user,
        progress=progress,
        parameters={"file": str(file), "images": str(images)},
        parse=lambda: parse_llava(Path(file)),
    )


def _pairs(conversations: list) -> list[tuple[str, str]]:
    """(question, answer) per human -> gpt pair; anything else is an error for the record."""
    if not conversations or len(conversations) % 2:
        raise BadField(
            "conversations", f"expected human/gpt turns in pairs, got {len(conversations)} turns"
        )
    turns = []
    for t, turn in enumerate(conversations):
        prefix = f"conversations[{t}]."
        expected = ASKER if t % 2 == 0 else ANSWERER
        speaker = get_text(turn, "from", prefix=prefix)
        if speaker not in expected:
            raise BadField(prefix + "from", f"expected {expected[0]!r}, got {speaker!r}")
        turns.append(get_text(turn, "value", prefix=prefix))
    pairs = []
    for t in range(0, len(turns), 2):
        question = turns[t].replace(IMAGE_TOKEN, "").strip()
        if not question:
            raise BadField(f"conversations[{t}].value", "the question is empty")
        pairs.append((question, turns[t + 1].strip()))
    return pairs


def parse_llava(path: Path) -> Plan:
    plan = Plan("llava")
    file = str(path)
    data = load_json(path)
    if not isinstance(data, list):
        reason = f"expected a JSON list of conversations, got {type_name(data)}"
        raise FileProblem(RecordError(file, "", "", reason))
    times_seen: dict[str, int] = {}
    for i, record in enumerate(data):
        where = f"[{i}]"
        try:
            record_id = str(get_id(record, "id"))
            where = f"[{i}] (id {record_id})"
            if record.get("image") is None:
                plan.note(TEXT_ONLY)
                continue
            image = get_text(record, "image", max_length=512).strip()
            if not image:
                raise BadField("image", "is empty")
            if "://" in image:
                raise BadField("image", f"{image!r} is a URL; {URL_REFUSED}")
            pairs = _pairs(get_list(record, "conversations"))
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        times_seen[record_id] = seen = times_seen.get(record_id, 0) + 1
        stem = record_id if seen == 1 else f"{record_id}#{seen}"
        key = os.path.normpath(image)
        if key not in plan.images:
            plan.images[key] = ImageSpec(
                key=key,
                paths=(image,),
                file=file,
                where=where,
                path_field="image",
                source="llava",
                file_name=image,
                uri=image,
                split=guess_split(image),
            )
        plan.questions.extend(
            QuestionSpec(key, question, answer, "llava", f"llava:{stem}:{turn}")
            for turn, (question, answer) in enumerate(pairs)
        )
    return plan
