"""COCO: an instances file (images, annotations, categories) and an optional captions file.

Each annotation becomes a ground-truth region: ``bbox [x, y, w, h]`` in pixels becomes
``[x0, y0, x1, y1]``, the category name becomes the phrase and a first caption, and crowd
annotations (``iscrowd: 1``, one box around a group) are kept but flagged ``crowd`` so review
can treat them apart. The captions file gives the images their global captions, in
annotation-id order. ``segmentation`` and ``area`` are not used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from training.geometry import from_xywh
from webapp.catalog.importing.pipeline import run_import
from webapp.catalog.importing.plan import ImageSpec, Plan, RegionSpec
from webapp.core.importing.fields import (
    as_number,
    get_id,
    get_list,
    get_size,
    get_text,
    load_json,
    top_list,
)
from webapp.core.importing.progress import Progress
from webapp.core.importing.report import BadField, ImportReport

SPLIT = re.compile(r"(?<![a-z])(train|val|test)(?![a-z])")
IMAGE_KEYS = ("id", "file_name", "width", "height")


def guess_split(*names: str) -> str:
    """The split a file name speaks of: ``train2017/...`` or ``COCO_val2014_...``; else "".

    >>> guess_split("000000397133.jpg", "instances_val2017.json")
    'val'
    >>> guess_split("interval.jpg")
    ''
    """
    for name in names:
        match = SPLIT.search(name.lower())
        if match:
            return match.group(1)
    return ""


def import_coco(
    *,
    dataset: str,
    instances: Path,
    captions: Path | None = None,
    images: Path,
    on_error: str = "abort",
    user: Any = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a COCO instances file (and captions file) with images under ``images``."""
    parameters = {
        "instances": str(instances),
        "captions": str(captions or ""),
        "images": str(images),
    }
    return run_import(
        format="coco",
        dataset=dataset,
        images=images,
        on_error=on_error,
        user=user,
        progress=progress,
        parameters=parameters,
        parse=lambda: parse_coco(Path(instances), Path(captions) if captions else None),
    )


def parse_coco(instances: Path, captions: Path | None) -> Plan:
    plan = Plan("coco")
    file = str(instances)
    data = load_json(instances)
    images, annotations, categories = (
        top_list(data, key, file) for key in ("images", "annotations", "categories")
    )
    bad_images = _read_images(plan, images, file, guess_split(instances.name))
    names = _read_categories(plan, categories, file)
    _read_annotations(plan, annotations, names, bad_images, file)
    if captions is not None:
        _read_captions(plan, captions)
    return plan


def _read_images(plan: Plan, records: list, file: str, split_hint: str) -> dict[str, str]:
    """Add the good images to ``plan``; return where each bad one with a readable id is."""
    bad: dict[str, str] = {}
    for i, record in enumerate(records):
        where = f"images[{i}]"
        image_id = None
        try:
            image_id = get_id(record, "id")
            where = f"images[{i}] (id {image_id})"
            file_name = get_text(record, "file_name", max_length=512)
            width, height = get_size(record, "width"), get_size(record, "height")
            key = str(image_id)
            if key in plan.images:
                raise BadField("id", f"duplicate image id, first at {plan.images[key].where}")
        except BadField as exc:
            plan.error(file, where, exc)
            if image_id is not None and str(image_id) not in plan.images:
                bad[str(image_id)] = where
            continue
        url = record.get("coco_url")
        plan.images[key] = ImageSpec(
            key=key,
            paths=(file_name,),
            file=file,
            where=where,
            path_field="file_name",
            width=width,
            height=height,
            source="coco",
            source_id=key,
            file_name=file_name,
            uri=url if isinstance(url, str) and len(url) <= 2048 else file_name,
            split=guess_split(file_name) or split_hint,
            metadata={k: v for k, v in record.items() if k not in IMAGE_KEYS},
        )
    return bad


def _read_categories(plan: Plan, records: list, file: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for i, record in enumerate(records):
        where = f"categories[{i}]"
        try:
            category_id = get_id(record, "id")
            where = f"categories[{i}] (id {category_id})"
            name = get_text(record, "name", max_length=512).strip()
            if str(category_id) in names:
                raise BadField("id", "duplicate category id")
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        names[str(category_id)] = name
    return names


def _bbox(record: dict) -> tuple[float, float, float, float]:
    bbox = get_list(record, "bbox")
    if len(bbox) != 4:
        raise BadField("bbox", f"expected [x, y, width, height], got {bbox!r}")
    x, y, w, h = (as_number(v, "bbox") for v in bbox)
    return from_xywh(x, y, w, h)


def _read_annotations(
    plan: Plan, records: list, names: dict[str, str], bad_images: dict[str, str], file: str
) -> None:
    first_at: dict[str, str] = {}
    for i, record in enumerate(records):
        where = f"annotations[{i}]"
        try:
            ann_id = get_id(record, "id")
            where = f"annotations[{i}] (id {ann_id})"
            if str(ann_id) in first_at:
                raise BadField("id", f"duplicate annotation id, first at {first_at[str(ann_id)]}")
            image_key = _image_key(plan, record, bad_images)
            category_id = str(get_id(record, "category_id"))
            if category_id not in names:
                raise BadField("category_id", f"unknown category id {category_id}")
            box = _bbox(record)
            crowd = record.get("iscrowd", 0)
            if crowd not in (0, 1):  # also True / False
                raise BadField("iscrowd", f"expected 0 or 1, got {crowd!r}")
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        first_at[str(ann_id)] = where
        name = names[category_id]
        plan.regions.append(
            RegionSpec(
                image_key=image_key,
                box=box,
                box_field="bbox",
                phrase=name,
                caption=name,
                source_key=f"coco:ann:{ann_id}",
                file=file,
                where=where,
                flag_reason="crowd" if crowd else "",
            )
        )


def _image_key(plan: Plan, record: dict, bad_images: dict[str, str]) -> str:
    image_key = str(get_id(record, "image_id"))
    if image_key in bad_images:
        raise BadField("image_id", f"image {image_key} has an error ({bad_images[image_key]})")
    if image_key not in plan.images:
        raise BadField("image_id", f"unknown image id {image_key}")
    return image_key


def _read_captions(plan: Plan, path: Path) -> None:
    """Global captions from a COCO captions file, stripped, deduplicated, in id order."""
    file = str(path)
    annotations = top_list(load_json(path), "annotations", file)
    found: dict[str, list[tuple[Any, str]]] = {}
    seen: set[str] = set()
    for i, record in enumerate(annotations):
        where = f"annotations[{i}]"
        try:
            ann_id = get_id(record, "id")
            where = f"annotations[{i}] (id {ann_id})"
            if str(ann_id) in seen:
                raise BadField("id", "duplicate caption annotation id")
            image_key = str(get_id(record, "image_id"))
            if image_key not in plan.images:
                raise BadField("image_id", f"image {image_key} is not in the instances file")
            caption = get_text(record, "caption").strip()
            if not caption:
                raise BadField("caption", "is empty")
        except BadField as exc:
            plan.error(file, where, exc)
            continue
        seen.add(str(ann_id))
        found.setdefault(image_key, []).append((ann_id, caption))
    for image_key, pairs in found.items():
        if all(isinstance(ann_id, int) for ann_id, _ in pairs):
            pairs.sort(key=lambda pair: pair[0])
        captions = plan.images[image_key].captions
        captions.extend(dict.fromkeys(c for _, c in pairs if c not in captions))
