"""Building small real import inputs: image files made with Pillow and annotation files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.jobs.models import Run
from webapp.regions.models import Region

WIDTH, HEIGHT = 64, 48


def image_bytes(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT), fmt: str = "PNG") -> bytes:
    """A small picture whose bytes differ for each seed (images are deduplicated by hash)."""
    picture = PILImage.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    picture.putpixel((seed % size[0], 0), (255, 255, 255))
    out = io.BytesIO()
    picture.save(out, fmt)
    return out.getvalue()


def write_image(folder: Path, name: str, seed: int, **kwargs: Any) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, **kwargs))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def coco_instances(images: Path, count: int = 2) -> dict:
    """A COCO instances file's content for ``count`` images written into ``images``.

    Image i (id i) gets two boxes: a cat ``[4, 4, 20, 10]`` and a dog ``[30, 20, 30, 20]``.
    """
    data: dict = {
        "info": {"description": "test"},
        "images": [],
        "annotations": [],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 2, "name": "dog", "supercategory": "animal"},
        ],
    }
    for i in range(1, count + 1):
        name = f"{i:012d}.png"
        write_image(images, name, seed=i)
        data["images"].append(
            {"id": i, "file_name": name, "width": WIDTH, "height": HEIGHT, "license": 3}
        )
        for category, bbox in ((1, [4, 4, 20, 10]), (2, [30, 20, 30, 20])):
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": i,
                    "category_id": category,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "segmentation": [[0, 0, 1, 1, 2, 2]],
                }
            )
    return data


def row_counts() -> dict[str, int]:
    """What "the database is unchanged" is checked against."""
    return {
        "datasets": Dataset.objects.count(),
        "images": Image.objects.count(),
        "regions": Region.objects.count(),
        "questions": QuestionItem.objects.count(),
        "runs": Run.objects.count(),
    }
