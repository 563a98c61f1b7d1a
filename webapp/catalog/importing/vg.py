"""Visual Genome: ``region_descriptions.json`` plus ``image_data.json``.

Region phrases become both the phrase and the caption of a ground-truth region. The images
imported are those ``region_descriptions.json`` lists (an image with no regions is still an
image); ``image_data.json`` gives their size, URL and COCO / Flickr ids, and entries there for
images the regions file does not mention are ignored, so a slice of the regions file imports
a slice. The file of image 1 is ``<images>/1.jpg``, or the URL's last one or two path parts
(``VG_100K_2/1.jpg``), which is how the two official zip files unpack.

Real VG boxes often spill past the image edge, by a few pixels or by hundreds: a box that
overlaps its image is clipped to it and counted (``FGAM_BOX_CLIP_TOLERANCE`` makes that strict).
Some boxes have zero width or height or lie wholly outside the image (errors naming the region,
so use ``on_error="skip"`` for the full dataset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from training.geometry import from_xywh
from webapp.catalog.importing.pipeline import run_import
from webapp.catalog.importing.plan import ImageSpec, Plan, RegionSpec
from webapp.core.importing.fields import (
    FileProblem,
    get_id,
    get_list,
    get_number,
    get_size,
    get_text,
    load_json,
)
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import BadField, ImportReport, RecordError


def import_vg(
    *,
    dataset: str,
    regions: Path,
    image_data: Path,
    images: Path,
    on_error: str = "abort",
    user: Any = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import Visual Genome region descriptions with images under ``images``."""
    return run_import(
        format="vg",
        dataset=dataset,
        images=images,
        on_error=on_error,
        user=user,
        progress=progress,
        parameters={"regions": str(regions), "image_data": str(image_data), "images": str(images)},
        parse=lambda: parse_vg(Path(regions), Path(image_data)),
    )


def _top_level_list(data: Any, file: str) -> list:
    if not isinstance(data, list):
        raise FileProblem(RecordError(file, "", "", "expected a JSON list at the top level"))
    return data


def _either_id(record: Any, *keys: str) -> int | str:
    """VG files name the image id ``image_id`` in some releases and ``id`` in others."""
    present = next((key for key in keys if isinstance(record, dict) and key in record), keys[0])
    return get_id(record, present)


def _file_candidates(image_id: str, url: str) -> tuple[str, ...]:
    parts = [p for p in urlparse(url).path.split("/") if p] if url else []
    candidates = [f"{image_id}.jpg", *parts[-1:], "/".join(parts[-2:])] if parts else []
    return tuple(dict.fromkeys(candidates or [f"{image_id}.jpg"]))


def _read_image_data(plan: Plan, path: Path) -> dict[str, tuple[str, dict]]:
    """Image id -> (where in image_data.json, the record), for the records that are sound."""
    file = str(path)
    found: dict[str, tuple[str, dict]] = {}
    for i, record in enumerate(_top_level_list(load_json(path), file)):
        where = f"[{i}]"
        try:
            key = str(_either_id(record, "image_id", "id"))
            where = f"[{i}] (image_id {key})"
            if key in found:
                raise BadField("image_id", f"duplicate image id, first at {found[key][0]}")
            get_size(record, "width"), get_size(record, "height")
            get_text(record, "url", max_length=2048, optional=True)
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        found[key] = (where, record)
    return found


def parse_vg(regions: Path, image_data: Path) -> Plan:
    plan = Plan("vg")
    described = _read_image_data(plan, image_data)
    file = str(regions)
    seen_regions: dict[str, str] = {}
    for i, entry in enumerate(_top_level_list(load_json(regions), file)):
        where = f"[{i}]"
        try:
            key = str(_either_id(entry, "id", "image_id"))
            where = f"[{i}] (image id {key})"
            if key in plan.images:
                raise BadField("id", f"duplicate image id, first at {plan.images[key].where}")
            if key not in described:
                raise BadField("id", f"image {key} is not (or not validly) in {image_data}")
            records = get_list(entry, "regions")
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        plan.images[key] = _image_spec(key, *described[key], str(image_data))
        for k, record in enumerate(records):
            _read_region(plan, record, key, f"[{i}].regions[{k}]", file, seen_regions)
    return plan


def _image_spec(key: str, where: str, record: dict, file: str) -> ImageSpec:
    url = record.get("url") or ""
    candidates = _file_candidates(key, url)
    return ImageSpec(
        key=key,
        paths=candidates,
        file=file,
        where=where,
        path_field="image_id",
        width=get_size(record, "width"),
        height=get_size(record, "height"),
        source="vg",
        source_id=key,
        file_name=candidates[0],
        uri=url or candidates[0],
        metadata={k: record[k] for k in ("coco_id", "flickr_id") if record.get(k) is not None},
    )


def _read_region(
    plan: Plan, record: Any, image_key: str, where: str, file: str, seen: dict[str, str]
) -> None:
    try:
        region_id = get_id(record, "region_id")
        where = f"{where} (region_id {region_id})"
        if str(region_id) in seen:
            raise BadField("region_id", f"duplicate region id, first at {seen[str(region_id)]}")
        if "image_id" in record and str(get_id(record, "image_id")) != image_key:
            raise BadField("image_id", f"is not the enclosing image's id {image_key}")
        x, y = get_number(record, "x"), get_number(record, "y")
        w, h = get_number(record, "width"), get_number(record, "height")
        phrase = get_text(record, "phrase").strip()
        if len(phrase) > 512:
            raise BadField("phrase", f"is {len(phrase)} characters long; at most 512 fit")
    except BadField as exc:
        plan.error(file, where, exc)
        return
    seen[str(region_id)] = where
    plan.regions.append(
        RegionSpec(
            image_key=image_key,
            box=from_xywh(x, y, w, h),
            box_field="x/y/width/height",
            phrase=phrase,
            caption=phrase,
            source_key=f"vg:region:{region_id}",
            file=file,
            where=where,
        )
    )
