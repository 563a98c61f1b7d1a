"""Caption runs: a region-specific caption for each selected region without one.

Strategies (``workers.captioning``): ``template`` (no model: phrase plus position and size
words), ``local`` (an image-to-text model on the crop, gpu queue) and ``llm`` (an
OpenAI-compatible endpoint, llm queue). The prompt's version and text are stored on the run.

Captions are written only where the region's caption is still empty and its version is the
one read before captioning (a conditional ``UPDATE``), with a ``RegionChange`` naming the run:
a caption a person typed meanwhile is never overwritten, and a batch run twice writes nothing
the second time.
"""

from __future__ import annotations

import functools
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from webapp.catalog.models import Dataset, Image
from webapp.catalog.thumbnails import NoStoredBytes, read_stored_bytes
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import (
    BatchOutcome,
    check_filter,
    claim_batch,
    filter_ids,
    finish_batch,
)
from webapp.regions.models import Region, RegionChange

STRATEGIES = ("template", "local", "llm")
REGION_FILTER_KEYS = frozenset({"origin", "status", "run", "ids", "min_id", "max_id"})


def check_region_filter(region_filter: dict | None) -> dict:
    """A clean copy of ``region_filter``; ``ValueError`` names the bad key."""
    region_filter = check_filter(region_filter, name="region_filter", keys=REGION_FILTER_KEYS)
    if "origin" in region_filter and region_filter["origin"] not in Region.Origin.values:
        raise ValueError(f"region_filter.origin: {region_filter['origin']!r} is not an origin")
    if "status" in region_filter and region_filter["status"] not in Region.Status.values:
        raise ValueError(f"region_filter.status: {region_filter['status']!r} is not a status")
    if "run" in region_filter and (
        not isinstance(region_filter["run"], int) or region_filter["run"] < 0
    ):
        raise ValueError("region_filter.run must be a non-negative integer")
    return region_filter


def selected_regions(run: Run) -> QuerySet[Region]:
    """The regions a caption run covers: its dataset's regions without a caption, filtered."""
    regions = Region.objects.filter(image__dataset_id=run.dataset_id, caption="")
    region_filter = run.parameters.get("region_filter") or {}
    if "origin" in region_filter:
        regions = regions.filter(origin=region_filter["origin"])
    if "status" in region_filter:
        regions = regions.filter(status=region_filter["status"])
    if "run" in region_filter:
        regions = regions.filter(run_id=region_filter["run"])
    return filter_ids(regions, region_filter)


@functools.lru_cache(maxsize=4)
def get_captioner(
    strategy: str,
    model: str,
    base_url: str,
    timeout: float,
    concurrency: int,
    max_retries: int,
    device: str,
    dtype: str,
):
    """One captioner per configuration per process: a local model is loaded once."""
    from workers.captioning import make_captioner

    return make_captioner(
        strategy,
        model=model,
        base_url=base_url,
        api_key=settings.FGAM_LLM_API_KEY,
        timeout=timeout,
        concurrency=concurrency,
        max_retries=max_retries,
        device=device,
        dtype=dtype,
    )


def _captioner_for(params: dict, model_id: str):
    return get_captioner(
        params["strategy"],
        model_id,
        params.get("base_url", ""),
        float(params.get("timeout", 60.0)),
        int(params.get("concurrency", 16)),
        int(params.get("max_retries", 5)),
        params.get("device", "auto"),
        params.get("dtype", "auto"),
    )


def start_caption_run(
    *,
    dataset: Dataset,
    strategy: str = "template",
    model: str = "",
    batch_size: int | None = None,
    concurrency: int = 16,
    timeout: float | None = None,
    max_retries: int = 5,
    device: str = "",
    dtype: str = "",
    user=None,
    region_filter: dict | None = None,
) -> Run:
    """Record a caption run and queue it; ``ValueError`` for a bad parameter.

    ``model`` defaults to ``FGAM_LLM_MODEL`` for ``llm``; ``local`` needs one. The LLM's
    base URL comes from settings (the key never reaches the run's parameters), and so do the
    prices, which are stored so the run's cost stays what it was when it ran.
    """
    from webapp.jobs.tasks import plan_run

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
    if strategy == "llm":
        model = model or settings.FGAM_LLM_MODEL
    if strategy == "local" and not model:
        raise ValueError("the local strategy needs a model (an id or a folder)")
    batch_size = batch_size or (64 if strategy == "llm" else 32)
    if not 1 <= int(batch_size) <= 4096:
        raise ValueError("batch_size must be between 1 and 4096")
    if not 1 <= int(concurrency) <= 512:
        raise ValueError("concurrency must be between 1 and 512")
    params = {
        "strategy": strategy,
        "batch_size": int(batch_size),
        "concurrency": int(concurrency),
        "timeout": float(timeout or settings.FGAM_LLM_TIMEOUT),
        "max_retries": int(max_retries),
        "device": device or settings.FGAM_DEVICE,
        "dtype": dtype or settings.FGAM_DTYPE,
        "base_url": settings.FGAM_LLM_BASE_URL if strategy == "llm" else "",
        "region_filter": check_region_filter(region_filter),
        "prices": {
            "prompt_per_1k": settings.FGAM_LLM_PRICE_PROMPT_PER_1K,
            "completion_per_1k": settings.FGAM_LLM_PRICE_COMPLETION_PER_1K,
        }
        if strategy == "llm"
        else {},
    }
    if strategy != "local":
        # Cheap to build (no model loads): the prompt is known before the first batch runs.
        captioner = _captioner_for(params, model)
        params.update(_prompt_of(captioner))
    run = Run.objects.create(
        kind=Run.Kind.CAPTION,
        dataset=dataset,
        model_id=model,
        created_by=user if user is not None and user.is_authenticated else None,
        parameters=params,
    )
    plan_run.delay_on_commit(run.pk)
    run.refresh_from_db()
    return run


def _prompt_of(captioner) -> dict:
    return {
        "prompt_version": getattr(captioner, "prompt_version", ""),
        "prompt_text": getattr(captioner, "prompt_text", ""),
    }


def _record_prompt(run: Run, captioner) -> None:
    """For a local model the prompt is known once it is loaded: store it with the first batch."""
    if "prompt_version" in run.parameters:
        return
    with transaction.atomic():
        locked = Run.objects.select_for_update().only("parameters").get(pk=run.pk)
        if "prompt_version" not in locked.parameters:
            Run.objects.filter(pk=run.pk).update(
                parameters={**locked.parameters, **_prompt_of(captioner)}
            )


def process_caption_batch(*, batch_id: int, task_id: str = "") -> RunBatch | None:
    """Caption one batch of regions and write the captions; None if there was nothing to do.

    Regions that have a caption already (written by an earlier attempt of this batch, or by a
    person) are done without a call. A region whose image bytes cannot be read, or that the
    captioner could not caption (refusal, malformed answer, retries used up), is a failed item
    with its reason; the batch goes on.
    """
    from workers.region_captions import RegionToCaption

    batch = claim_batch(batch_id=batch_id, task_id=task_id)
    if batch is None:
        return None
    started = time.monotonic()
    run = batch.run
    params = run.parameters
    captioner = _captioner_for(params, run.model_id)
    _record_prompt(run, captioner)
    needs_pixels = params["strategy"] != "template"

    regions = {
        r.pk: r
        for r in Region.objects.filter(pk__in=batch.ids)
        .select_related("image")
        .only(
            *("pk", "x0", "y0", "x1", "y1", "phrase", "caption", "version"),
            *("image_width", "image_height", "status", "score", "origin", "flagged"),
            *("image__id", "image__captions", "image__storage_path"),
        )
    }
    errors: list[dict] = []
    pixels: dict[int, bytes | str] = {}
    todo = []
    for region in sorted(regions.values(), key=lambda r: r.pk):
        if region.caption:
            continue  # captioned already: by an earlier attempt, or by a person
        image_bytes = None
        if needs_pixels:
            image_bytes = _image_bytes(region.image, pixels, errors, region.pk)
            if image_bytes is None:
                continue
        todo.append(
            RegionToCaption(
                key=str(region.pk),
                box=tuple(region.box),
                phrase=region.phrase,
                image_width=region.image_width,
                image_height=region.image_height,
                global_caption=region.image.caption,
                image=image_bytes,
            )
        )

    outcomes = captioner.caption(todo) if todo else []
    captions: dict[int, str] = {}
    prompt_tokens = completion_tokens = 0
    for outcome in outcomes:
        prompt_tokens += outcome.prompt_tokens or 0
        completion_tokens += outcome.completion_tokens or 0
        caption = (outcome.caption or "").strip()
        if caption and not outcome.error:
            captions[int(outcome.key)] = caption
        else:
            errors.append({"id": int(outcome.key), "error": outcome.error or "empty caption"})
    answered = {int(o.key) for o in outcomes}
    for item in todo:
        if int(item.key) not in answered:
            errors.append({"id": int(item.key), "error": "the captioner returned no answer"})

    def write() -> None:
        write_captions(run=run, regions=regions, captions=captions)

    failed = len({e["id"] for e in errors})
    outcome = BatchOutcome(
        done=len(batch.ids) - failed,
        failed=failed,
        errors=tuple(errors),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    finish_batch(batch, outcome, write=write, seconds=time.monotonic() - started)
    return batch


def _image_bytes(
    image: Image, cache: dict[int, bytes | str], errors: list, region_id: int
) -> bytes | None:
    """The image's stored bytes, read once per batch; a failure is recorded per region."""
    if image.pk not in cache:
        try:
            cache[image.pk] = read_stored_bytes(image)
        except NoStoredBytes as exc:
            cache[image.pk] = str(exc)
    found = cache[image.pk]
    if isinstance(found, str):
        errors.append({"id": region_id, "error": found})
        return None
    return found


def write_captions(*, run: Run, regions: dict[int, Region], captions: dict[int, str]) -> dict:
    """Write each caption where the region is still uncaptioned at the version read.

    One conditional ``UPDATE`` per region (its row count says whether it still applied) and
    one bulk insert of the history rows. Call inside the batch's transaction.
    """
    now = timezone.now()
    changes = []
    changed_meanwhile = 0
    for region_id, caption in captions.items():
        region = regions[region_id]
        updated = Region.objects.filter(pk=region_id, version=region.version, caption="").update(
            caption=caption, version=F("version") + 1, updated_at=now
        )
        if not updated:
            changed_meanwhile += 1
            continue
        before = region.snapshot()
        after = {**before, "caption": caption, "version": region.version + 1}
        changes.append(
            RegionChange(
                region_id=region_id,
                action=RegionChange.Action.UPDATE,
                version=region.version + 1,
                run=run,
                before=before,
                after=after,
            )
        )
    RegionChange.objects.bulk_create(changes)
    return {"written": len(changes), "changed_meanwhile": changed_meanwhile}
