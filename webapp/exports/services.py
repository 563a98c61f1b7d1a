"""Cutting dataset versions: validate the choice, record it, write it, publish it.

How a version is made:

1. ``cut_version`` validates datasets and filters (a bad filter or an empty selection is an
   ``ExportError`` naming the field; ``selection`` has the rules), records the
   ``DatasetVersion`` (status ``queued``) with its lineage, and enqueues
   ``fgam.default.export_version`` once the transaction commits.
2. ``export_version`` claims the version with a conditional update, then has
   ``writing.write_files`` read every row in one snapshot and write it into a temporary
   folder whose name starts with a dot.
3. The folder is published (``storage``): renamed into place in one ``rename`` on a local
   filesystem, or uploaded through Django's storage API with ``manifest.json`` last. Only then
   does the row become ``ready``. A version killed midway leaves a hidden temporary folder and
   a row that is not ready; running the task again starts over and completes it.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from webapp.catalog.models import Dataset
from webapp.exports.models import DatasetVersion
from webapp.exports.progress import ExportProgress, ProgressCallback
from webapp.exports.selection import (
    ExportError,
    describe_filters,
    parse_filters,
    question_queryset,
    region_queryset,
    trajectory_queryset,
)
from webapp.exports.storage import publish_target
from webapp.exports.writing import write_files

log = logging.getLogger(__name__)


def _datasets(names: list[str]) -> list[Dataset]:
    if not names:
        raise ExportError("choose at least one dataset")
    found = {d.name: d for d in Dataset.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ExportError(f"no dataset named {', '.join(map(repr, missing))}")
    return sorted(found.values(), key=lambda d: d.name)


def cut_version(
    *,
    datasets: list[str],
    filters: dict[str, Any] | None = None,
    reference: bool = False,
    created_by=None,
    out_dir: str | Path | None = None,
    train_on_ready: dict[str, Any] | None = None,
    enqueue: bool = True,
) -> DatasetVersion:
    """Record a version to cut and (unless ``enqueue=False``) hand it to the export task.

    ``out_dir`` writes into that folder instead of Django's storage (the command line).
    """
    chosen = _datasets(list(datasets))
    parsed = parse_filters(filters)
    ids = [d.pk for d in chosen]
    if (
        not region_queryset(ids, parsed).exists()
        and not question_queryset(ids).exists()
        and not trajectory_queryset(ids, parsed).exists()
    ):
        raise ExportError(
            f"empty selection: no region of {', '.join(d.name for d in chosen)} passes the "
            f"filters ({describe_filters(parsed)}) and there are no questions or trajectories"
        )
    with transaction.atomic():
        version = DatasetVersion.objects.create(
            name=f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
            filters=asdict(parsed),
            reference=reference,
            holdout_fraction=parsed.holdout_fraction,
            storage=DatasetVersion.Storage.PATH if out_dir else DatasetVersion.Storage.STORAGE,
            location=str(Path(out_dir).resolve()) if out_dir else "",
            train_on_ready=train_on_ready or {},
            created_by=created_by,
        )
        version.datasets.set(chosen)
        parents = previous_versions(ids, exclude=version.pk)
        if parents:
            version.derived_from.set(parents)
        if enqueue:
            from webapp.exports.tasks import export_version as task

            task.delay_on_commit(version.pk)
    return version


def previous_versions(dataset_ids: list[int], *, exclude: int) -> list[DatasetVersion]:
    """Lineage: the latest ready version of each chosen dataset, which this cut supersedes."""
    parents: dict[int, DatasetVersion] = {}
    for dataset_id in sorted(dataset_ids):
        latest = (
            DatasetVersion.objects.filter(status=DatasetVersion.Status.READY, datasets=dataset_id)
            .exclude(pk=exclude)
            .order_by("-id")
            .first()
        )
        if latest is not None:
            parents[latest.pk] = latest
    return list(parents.values())


def export_version(
    *, version_id: int, progress_callback: ProgressCallback | None = None
) -> DatasetVersion | None:
    """Write and publish the version; None when it is already ready (a redelivered task).

    Progress (phase, rows written, total) goes to the version row about once a second, and to
    ``progress_callback`` (the command line's bar) at the same rate.
    """
    claimed = (
        DatasetVersion.objects.filter(pk=version_id)
        .exclude(status=DatasetVersion.Status.READY)
        .update(status=DatasetVersion.Status.RUNNING, started_at=timezone.now(), error="")
    )
    if not claimed:
        return None
    DatasetVersion.objects.filter(pk=version_id).update(attempts=F("attempts") + 1)
    version = DatasetVersion.objects.get(pk=version_id)
    target = publish_target(version)
    target.remove_stale_temporaries()
    tmp = target.temporary()
    progress = ExportProgress(version_id, callback=progress_callback)
    try:
        manifest = write_files(version, tmp, progress=progress)
        progress.start_phase("publishing")
        location = target.publish(tmp, manifest["content_sha256"])
        progress.close()
    except BaseException as exc:
        progress.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            DatasetVersion.objects.filter(pk=version_id).update(
                status=DatasetVersion.Status.FAILED,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                finished_at=timezone.now(),
            )
        raise
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version_id).update(
            status=DatasetVersion.Status.READY,
            location=location,
            content_sha256=manifest["content_sha256"],
            counts=manifest["counts"],
            size_bytes=manifest["size_bytes"],
            manifest=manifest,
            finished_at=timezone.now(),
            # The final figures on the row itself, whatever the progress thread managed to write.
            progress_phase="done",
            progress_done=progress.done,
            progress_total=max(progress.total, progress.done),
        )
        version.refresh_from_db()
        transaction.on_commit(lambda: version_ready(version_id=version_id))
    return version


def version_ready(*, version_id: int) -> None:
    """After commit: tell webhooks, and start the "train on export" job if one was asked for."""
    from webapp.exports import webhooks
    from webapp.exports.training_jobs import TrainingJobError, start_training_job

    version = DatasetVersion.objects.get(pk=version_id)
    webhooks.send_event(
        "version.ready",
        {
            "version": version.name,
            "id": version.pk,
            "content_sha256": version.content_sha256,
            "counts": version.counts,
            "location": version.location,
        },
    )
    if version.train_on_ready and not version.jobs.exists():
        cfg = dict(version.train_on_ready)
        try:
            start_training_job(
                version=version,
                kind=cfg.pop("kind", "stage1"),
                preset=cfg.pop("preset", ""),
                gpus=int(cfg.pop("gpus", 1)),
                config=cfg.pop("config", {}),
                created_by=version.created_by,
            )
        except (TrainingJobError, ValueError) as exc:
            # The version itself is complete; say on it why its job did not start.
            log.warning("version %s: train on export not started: %s", version.name, exc)
            DatasetVersion.objects.filter(pk=version_id).update(
                error=f"train on export not started: {exc}"
            )
