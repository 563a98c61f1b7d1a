"""Catalog writes that touch several models or enqueue work.

``enqueue_thumbnails`` is what importers and the API call after new images are committed;
``process_new_images`` is the work the ``fgam.default.make_thumbnails`` task does, kept here so
it is a plain function a test or a shell can call without Celery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.catalog.models import DatasetAccess, Image
from webapp.catalog.thumbnails import NoStoredBytes, ensure_thumbnail, read_stored_bytes
from webapp.core.roles import ANNOTATOR
from webapp.jobs.models import Run
from workers.imaging import ImageProblem, inspect_image, probe_metadata

log = logging.getLogger(__name__)

# Bump when the probe gains fields, so images probed by an older version are probed again.
PROBE_VERSION = 1


def chunked(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for image_id in ids:
        chunk.append(int(image_id))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def enqueue_thumbnails(image_ids: Iterable[int], *, chunk_size: int | None = None) -> int:
    """Queue thumbnail and probe work for ``image_ids``, once the current transaction commits.

    Ids are split into chunks so a 5,000-image import becomes many short tasks that several
    workers share, instead of one long task. ``delay_on_commit`` means a rolled-back import
    enqueues nothing, and a worker never looks for rows it cannot see yet. Without a broker
    the tasks run in-process at commit time. Returns the number of tasks queued.
    """
    # Imported here: the task module imports this module lazily too, and Celery loads task
    # modules before Django's app registry is ready.
    from webapp.catalog.tasks import make_thumbnails

    # Images per task. Small enough that one task finishes well inside its time limit and a
    # retry repeats little; large enough that the per-task overhead (a Run row, a broker round
    # trip) stays negligible next to decoding the images.
    size = chunk_size or settings.FGAM_THUMBNAIL_BATCH_SIZE
    queued = 0
    for chunk in chunked(image_ids, size):
        make_thumbnails.delay_on_commit(chunk)
        queued += 1
    return queued


def needs_processing(image: Image) -> bool:
    probe = image.metadata.get("probe") if isinstance(image.metadata, dict) else None
    has_probe = isinstance(probe, dict) and probe.get("version") == PROBE_VERSION
    return not (image.thumbnail_path and has_probe)


def process_image(image: Image) -> None:
    """Make the thumbnail and store the probe for one image; raise on a permanent problem.

    The full decode in ``inspect_image`` runs first, so a corrupt or truncated file is
    classified as an ``ImageProblem`` here rather than surfacing as a half-written thumbnail.
    A missing file is ``NoStoredBytes`` (permanent); a storage outage propagates (transient).
    ``ensure_thumbnail`` records ``thumbnail_path`` itself, so only the probe is written here.
    """
    data = read_stored_bytes(image)
    max_pixels = settings.FGAM_MAX_IMAGE_PIXELS
    inspect_image(data, max_pixels=max_pixels)
    probe = {
        **probe_metadata(data, max_pixels=max_pixels),
        "bytes": len(data),
        "version": PROBE_VERSION,
    }
    ensure_thumbnail(image, data=data)
    # Merge under "probe" inside a row lock, so keys other writers put in metadata survive.
    with transaction.atomic():
        locked = Image.objects.select_for_update().only("metadata").get(pk=image.pk)
        metadata = locked.metadata if isinstance(locked.metadata, dict) else {}
        Image.objects.filter(pk=image.pk).update(metadata={**metadata, "probe": probe})


def _find_or_create_run(image_ids: Sequence[int], task_id: str) -> Run:
    """One Run per task: a retry of the same task id continues the Run its first try opened."""
    if task_id:
        run = Run.objects.filter(kind=Run.Kind.THUMBNAILS, parameters__task_id=task_id).first()
        if run is not None:
            return run
    dataset_ids = set(
        Image.objects.filter(pk__in=image_ids).values_list("dataset_id", flat=True).distinct()
    )
    return Run.objects.create(
        kind=Run.Kind.THUMBNAILS,
        dataset_id=dataset_ids.pop() if len(dataset_ids) == 1 else None,
        parameters={
            "task_id": task_id,
            "image_ids": list(image_ids),
            "thumbnail_size": settings.FGAM_THUMBNAIL_SIZE,
            "probe_version": PROBE_VERSION,
        },
    )


def process_new_images(*, image_ids: Sequence[int], task_id: str = "") -> Run:
    """Thumbnail and probe every image in ``image_ids``, recording the work as a Run.

    Safe to run again on the same ids (acks_late redelivery, retries, a second enqueue):
    images that already have a thumbnail and a current probe are skipped, and writes are
    plain overwrites of derived data. Permanent problems with one image (corrupt bytes, a
    missing file) are recorded in ``run.errors`` and the batch goes on. Anything else, such as
    a database or storage outage, marks the Run failed and propagates, so the task can retry
    the whole batch; the retry reopens this Run and skips what was already done.
    """
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    run = _find_or_create_run(ids, task_id)
    started = time.monotonic()
    run.status = Run.Status.RUNNING
    run.started_at = run.started_at or timezone.now()
    run.total = len(ids)
    run.done = run.failed = 0
    run.errors = []
    run.error = ""
    run.save(update_fields=["status", "started_at", "total", "done", "failed", "errors", "error"])

    counts = {"processed": 0, "skipped": 0, "missing": 0}
    found = {image.pk: image for image in Image.objects.filter(pk__in=ids)}
    try:
        for image_id in ids:
            image = found.get(image_id)
            if image is None:
                counts["missing"] += 1  # deleted since it was queued: nothing left to do
                run.done += 1
            elif not needs_processing(image):
                counts["skipped"] += 1
                run.done += 1
            else:
                try:
                    process_image(image)
                except (ImageProblem, NoStoredBytes) as exc:
                    run.failed += 1
                    run.errors.append(
                        {
                            "image": image.pk,
                            "file": image.storage_path or image.uri,
                            "error": str(exc),
                            "permanent": True,
                        }
                    )
                    log.warning("image %s: %s", image.pk, exc)
                else:
                    counts["processed"] += 1
                    run.done += 1
            Run.objects.filter(pk=run.pk).update(done=run.done, failed=run.failed)
    except BaseException as exc:  # also a soft time limit or a worker shutdown
        run.status = Run.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
        try:
            _finish(run, counts, started)
        except Exception:  # the database may be what failed; keep the original error
            log.exception("could not record the failure of run %s", run.pk)
        raise
    run.status = Run.Status.SUCCEEDED
    _finish(run, counts, started)
    return run


def _finish(run: Run, counts: dict[str, int], started: float) -> None:
    run.finished_at = timezone.now()
    seconds = round(time.monotonic() - started, 3)
    per_image = seconds * 1000 / counts["processed"] if counts["processed"] else None
    run.summary = {
        **counts,
        "failed": run.failed,
        "seconds": seconds,
        "ms_per_processed_image": round(per_image, 1) if per_image is not None else None,
    }
    run.save()


def set_dataset_access(*, dataset, restricted: bool, annotators, by) -> None:
    """Restrict ``dataset`` to ``annotators`` (users with the annotator role), or open it to
    every annotator again (``restricted=False``; the list is kept for the next restriction).

    Raises ``ValueError`` naming a listed user who is not an annotator; nothing is changed then.
    """
    users = list(annotators)
    not_annotators = sorted(
        u.get_username() for u in users if not u.groups.filter(name=ANNOTATOR).exists()
    )
    if not_annotators:
        raise ValueError(f"annotators: {', '.join(not_annotators)} not annotator(s)")
    with transaction.atomic():
        dataset.restricted = restricted
        dataset.save(update_fields=["restricted"])
        DatasetAccess.objects.filter(dataset=dataset).exclude(user__in=users).delete()
        have = set(DatasetAccess.objects.filter(dataset=dataset).values_list("user_id", flat=True))
        DatasetAccess.objects.bulk_create(
            DatasetAccess(dataset=dataset, user=u, granted_by=by) for u in users if u.pk not in have
        )
