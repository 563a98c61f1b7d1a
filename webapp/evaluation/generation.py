"""Generating a system's responses with ``python -m training rectify`` (a gpu-queue job).

``start_generation`` records the model and RM specs on the system and enqueues the task on
commit; the task calls ``run_generation``, which claims the system (queued -> running, so a
redelivered task does nothing), writes the round's items to a temporary JSONL with local image
paths, runs rectify, and stores the final answers as the system's responses. Items rectify
failed on are listed on the system; the curator can retry, or drop those items.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from webapp.evaluation.jsonl import InputError
from webapp.evaluation.models import Response, Round, System
from webapp.evaluation.rectify_runner import (
    RectifyError,
    read_output,
    rectify_command,
    run,
    write_items,
)

DEFAULT_TIMEOUT_S = 6 * 3600


def start_generation(*, system: System, model: str, rm: str, k: int = 2) -> System:
    """Queue a rectify job for the system (a draft round's); its old responses stay until the
    job succeeds."""
    if system.round.status != Round.Status.DRAFT:
        raise InputError("responses can only be generated while the round is a draft")
    if not model.strip() or not rm.strip():
        raise InputError("model and rm: both specs are required (a folder, a hub id or URL#MODEL)")
    if not 0 <= k <= 10:
        raise InputError("k: between 0 and 10")
    if not system.round.items.exists():
        raise InputError("the round has no items yet; add items first")
    if system.status in (System.Status.QUEUED, System.Status.RUNNING):
        raise InputError(f"{system.name}: a generation job is already {system.status}")
    System.objects.filter(pk=system.pk).update(
        source=System.Source.RECTIFY, status=System.Status.QUEUED, error="", failures=[],
        generation={"model": model.strip(), "rm": rm.strip(), "k": k}, finished_at=None,
    )  # fmt: skip
    from webapp.evaluation.tasks import generate_responses

    transaction.on_commit(lambda: generate_responses.delay(system.pk))
    system.refresh_from_db()
    return system


def _image_field(image, scratch: Path) -> dict[str, str]:
    """A local path rectify can open: the storage file itself, or a copy in ``scratch``."""
    if image.storage_path:
        try:
            return {"image_path": default_storage.path(image.storage_path)}
        except NotImplementedError:  # remote storage (S3): copy the bytes next to the items
            target = scratch / Path(image.storage_path).name
            with default_storage.open(image.storage_path, "rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            return {"image_path": str(target)}
    if image.uri:
        return {"uri": image.uri}
    raise RectifyError(f"image {image.pk} has neither a stored file nor a uri")


def run_generation(*, system_id: int, timeout_s: float | None = None) -> System | None:
    """Run rectify for a queued system; None when it was not queued (already taken)."""
    if not System.objects.filter(pk=system_id, status=System.Status.QUEUED).update(
        status=System.Status.RUNNING
    ):
        return None
    system = System.objects.select_related("round").get(pk=system_id)
    spec: dict[str, Any] = system.generation
    items = list(system.round.items.select_related("image").order_by("position"))
    log_dir = Path(settings.VAR_DIR) / "evaluation" / f"system-{system.pk}"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="fgam-rectify-") as tmp:
            scratch = Path(tmp)
            rows = [
                {"id": i.key, "question": i.question, **_image_field(i.image, scratch)}
                for i in items
            ]
            write_items(scratch / "items.jsonl", rows)
            command = rectify_command(
                model=spec["model"], rm=spec["rm"], k=int(spec.get("k", 2)),
                data=scratch / "items.jsonl", out=scratch / "out.jsonl",
            )  # fmt: skip
            run(
                command, log_path=log_dir / "log.txt", cwd=Path(settings.BASE_DIR),
                timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
            )  # fmt: skip
            output = read_output(scratch / "out.jsonl", [i.key for i in items])
    except (RectifyError, OSError) as error:
        System.objects.filter(pk=system_id).update(
            status=System.Status.FAILED, error=str(error), finished_at=timezone.now()
        )
        system.refresh_from_db()
        return system
    by_key = {i.key: i.pk for i in items}
    with transaction.atomic():
        system.responses.all().delete()
        Response.objects.bulk_create(
            Response(item_id=by_key[key], system=system, text=text, detail=detail)
            for key, (text, detail) in output.responses.items()
        )
        System.objects.filter(pk=system_id).update(
            status=System.Status.READY, failures=output.failures[:1000], finished_at=timezone.now(),
            error=f"{len(output.failures)} item(s) failed" if output.failures else "",
        )  # fmt: skip
    system.refresh_from_db()
    return system
