"""Where each region on a page came from: the run that made it and the run that captioned it.

Two queries whatever the number of regions: the caption changes made by runs, then every run
involved. Shown on the image page (and meant for the review screen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.jobs.models import Run
from webapp.regions.models import Region, RegionChange


@dataclass(frozen=True)
class RunInfo:
    """The facts about a run that a region's provenance shows."""

    id: int
    kind: str
    model_id: str
    box_threshold: float | None = None
    text_threshold: float | None = None
    prompt_mode: str = ""
    strategy: str = ""
    prompt_version: str = ""

    @property
    def model_name(self) -> str:
        """The last part of a model id or folder: ``grounding-dino-tiny``."""
        return self.model_id.rstrip("/").rsplit("/", 1)[-1] if self.model_id else ""


def _info(run: Run) -> RunInfo:
    p = run.parameters or {}
    return RunInfo(
        id=run.pk,
        kind=run.kind,
        model_id=run.model_id,
        box_threshold=p.get("box_threshold"),
        text_threshold=p.get("text_threshold"),
        prompt_mode=p.get("prompt_mode", ""),
        strategy=p.get("strategy", ""),
        prompt_version=p.get("prompt_version", ""),
    )


def attach_provenance(regions: Sequence[Region]) -> None:
    """Set ``region.made_by`` and ``region.captioned_by`` (a ``RunInfo`` or None) on each."""
    ids = [r.pk for r in regions]
    caption_runs: dict[int, int] = {}
    if ids:
        changes = (
            RegionChange.objects.filter(
                region_id__in=ids, run__isnull=False, run__kind=Run.Kind.CAPTION
            )
            .order_by("id")
            .values_list("region_id", "run_id")
        )
        caption_runs = dict(changes)  # the latest caption run per region wins
    run_ids = {r.run_id for r in regions if r.run_id} | set(caption_runs.values())
    runs = {
        run.pk: _info(run)
        for run in Run.objects.filter(pk__in=run_ids).only("kind", "model_id", "parameters")
    }
    for region in regions:
        region.made_by = runs.get(region.run_id) if region.run_id else None
        region.captioned_by = (
            runs.get(caption_runs[region.pk]) if region.pk in caption_runs else None
        )
