"""A demo dataset made by code: simple drawn scenes whose objects and positions are known.

Each scene is a sky over grass with a few objects (sun, cloud, tree, house, car, ball) drawn at
seeded random places. The generator writes the images plus a COCO instances file and a COCO
captions file, so the demo goes through ``import_coco``, the same path real data takes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from training.geometry import spatial_relation

WIDTH, HEIGHT = 640, 480
HORIZON = 300
CATEGORIES = ["sun", "cloud", "tree", "house", "car", "ball"]
COLOURS = {"car": ["red", "blue", "orange"], "ball": ["red", "purple", "white"]}


@dataclass
class Placed:
    name: str
    box: tuple[int, int, int, int]
    colour: str = ""

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.name}".strip()


def _draw(draw: ImageDraw.ImageDraw, obj: Placed) -> None:
    x0, y0, x1, y1 = obj.box
    w, h = x1 - x0, y1 - y0
    if obj.name == "sun":
        draw.ellipse(obj.box, fill=(255, 210, 40), outline=(230, 160, 0), width=3)
    elif obj.name == "cloud":
        for i in range(3):
            cx = x0 + w * (i + 1) / 4
            draw.ellipse((cx - w / 4, y0 + h * 0.2, cx + w / 4, y1), fill="white")
        draw.ellipse((x0 + w * 0.3, y0, x0 + w * 0.7, y0 + h * 0.7), fill="white")
    elif obj.name == "tree":
        draw.rectangle((x0 + w * 0.4, y0 + h * 0.6, x0 + w * 0.6, y1), fill=(110, 70, 30))
        draw.ellipse((x0, y0, x1, y0 + h * 0.7), fill=(30, 130, 50))
    elif obj.name == "house":
        draw.rectangle((x0, y0 + h * 0.4, x1, y1), fill=(200, 160, 120), outline="black")
        draw.polygon([(x0, y0 + h * 0.4), (x0 + w / 2, y0), (x1, y0 + h * 0.4)], fill=(160, 40, 40))
        draw.rectangle((x0 + w * 0.4, y0 + h * 0.65, x0 + w * 0.6, y1), fill=(90, 60, 30))
    elif obj.name == "car":
        draw.rectangle((x0, y0 + h * 0.35, x1, y0 + h * 0.8), fill=obj.colour)
        draw.rectangle((x0 + w * 0.2, y0, x0 + w * 0.75, y0 + h * 0.4), fill=obj.colour)
        for cx in (x0 + w * 0.22, x0 + w * 0.78):
            draw.ellipse((cx - h * 0.2, y1 - h * 0.4, cx + h * 0.2, y1), fill="black")
    elif obj.name == "ball":
        draw.ellipse(obj.box, fill=obj.colour, outline="black", width=2)


def _overlaps(box: tuple[int, int, int, int], others: list[Placed]) -> bool:
    return any(
        box[0] < o.box[2] and o.box[0] < box[2] and box[1] < o.box[3] and o.box[1] < box[3]
        for o in others
    )


def _place(rng: random.Random, name: str, placed: list[Placed]) -> Placed | None:
    sizes = {
        "sun": (50, 50),
        "cloud": (110, 55),
        "tree": (80, 140),
        "house": (130, 130),
        "car": (120, 60),
        "ball": (36, 36),
    }
    w, h = sizes[name]
    scale = rng.uniform(0.8, 1.25)
    w, h = int(w * scale), int(h * scale)
    for _ in range(50):
        x0 = rng.randint(5, WIDTH - w - 5)
        if name in ("sun", "cloud"):
            y0 = rng.randint(5, HORIZON - h - 60)
        else:
            ground = rng.randint(HORIZON + 10, HEIGHT - 10)
            y0 = ground - h
        box = (x0, y0, x0 + w, y0 + h)
        if not _overlaps(box, placed):
            return Placed(name, box, rng.choice(COLOURS.get(name, [""])))
    return None


RELATION_WORDS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "overlaps": "next to",
    "contains": "in front of",
    "inside": "in front of",
}


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _caption(objects: list[Placed]) -> str:
    first, second = objects[0], objects[1]
    relation = RELATION_WORDS[spatial_relation(first.box, second.box)]
    extra = f", with {_a(objects[2].phrase)} nearby" if len(objects) > 2 else ""
    text = f"{_a(first.phrase)} {relation} {_a(second.phrase)}{extra}."
    return text[0].upper() + text[1:]


def write_demo(out: Path, count: int = 24, seed: int = 7) -> tuple[Path, Path, Path]:
    """Write ``count`` scenes to ``out/images`` and their COCO files; return their paths."""
    rng = random.Random(seed)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": i + 1, "name": name, "supercategory": "scene"} for i, name in enumerate(CATEGORIES)
    ]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, captions = [], [], []
    for index in range(1, count + 1):
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (150, 200, 250))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, HORIZON, WIDTH, HEIGHT), fill=(110, 180, 90))
        names = ["sun", *rng.sample(CATEGORIES[1:], k=rng.randint(2, 4))]
        placed: list[Placed] = []
        for name in names:
            obj = _place(rng, name, placed)
            if obj:
                placed.append(obj)
        # Draw back to front so lower objects sit in front.
        for obj in sorted(placed, key=lambda o: o.box[3]):
            _draw(draw, obj)
        file_name = f"scene-{index:03d}.jpg"
        canvas.save(images_dir / file_name, "JPEG", quality=90)
        images.append({"id": index, "file_name": file_name, "width": WIDTH, "height": HEIGHT})
        for obj in placed:
            x0, y0, x1, y1 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": cat_id[obj.name],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        ground = [o for o in placed if o.name not in ("sun", "cloud")]
        captions.append({"id": index, "image_id": index, "caption": _caption(ground + placed[:1])})
    instances_path = out / "instances_demo.json"
    captions_path = out / "captions_demo.json"
    instances_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    captions_path.write_text(json.dumps({"images": images, "annotations": captions}))
    return instances_path, captions_path, images_dir
