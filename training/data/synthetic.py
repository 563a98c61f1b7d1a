"""Synthetic dataset versions in the exact FORMATS.md layout, with a learnable signal.

Each image shows 2-4 coloured shapes at random positions (sometimes a small shape inside a big
square, so ``contains``/``inside`` occur); each region's caption names its colour and shape, and
the global caption names the shapes and how the first two stand to each other. A model that
learns colour, shape and position beats chance on region retrieval and relation accuracy.

``python -m training synth --out DIR [--images N] [--shard-size N] [--seed S] [--reference]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.data.stage2_rows import StepRow, trajectory_records
from training.data.writer import VersionWriter
from training.geometry import spatial_relation

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 30),
    "magenta": (210, 40, 200),
    "cyan": (40, 210, 220),
}
SHAPES = ("square", "circle", "triangle")


def draw_shape(draw: Any, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def make_sample(rng: random.Random, size: int) -> tuple[bytes, dict[str, Any]]:
    """One PNG and its Stage-1 record (without the ``image`` sha, filled in by the writer)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    regions: list[dict[str, Any]] = []

    def add(shape: str, colour: str, box: tuple[int, int, int, int]) -> None:
        draw_shape(draw, shape, box, COLOURS[colour])
        regions.append(
            {
                "id": len(regions),
                "box": list(box),
                "caption": f"a {colour} {shape}",
                "phrase": f"{colour} {shape}",
                "origin": "gt",
                "score": 1.0,
            }
        )

    colours = rng.sample(sorted(COLOURS), k=4)
    if rng.random() < 0.25:
        side = rng.randint(size // 2, size * 3 // 4)
        x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
        add("square", colours.pop(), (x0, y0, x0 + side, y0 + side))
        inner = rng.randint(size // 8, side // 3)
        ix, iy = (
            rng.randint(x0 + 2, x0 + side - inner - 2),
            rng.randint(y0 + 2, y0 + side - inner - 2),
        )
        add(rng.choice(SHAPES), colours.pop(), (ix, iy, ix + inner, iy + inner))
    for _ in range(rng.randint(2, 4) - len(regions)):
        side = rng.randint(size // 6, size // 3)
        x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
        add(rng.choice(SHAPES), colours.pop(), (x0, y0, x0 + side, y0 + side))
    first, second = regions[0], regions[1]
    relation = spatial_relation(tuple(first["box"]), tuple(second["box"]))
    names = [r["caption"] for r in regions]
    caption = f"{names[0]} {relation} {names[1]}" + "".join(f", {n}" for n in names[2:])
    out = io.BytesIO()
    image.save(out, format="PNG")
    record = {"width": size, "height": size, "caption": caption, "regions": regions}
    return out.getvalue(), record


def write_version(
    out: str | Path,
    *,
    images: int = 64,
    shard_size: int = 32,
    image_size: int = 64,
    seed: int = 0,
    reference: bool = False,
    reference_dir: str | Path | None = None,
) -> Path:
    """Write a complete version (manifest with content_sha256, images/, stage1/ shards and
    index, stage2/, eval/) through ``VersionWriter`` and return its root. In reference mode
    the images go to ``reference_dir`` (default ``<out>.images``) and each record carries a
    ``file://`` uri."""
    root = Path(out)
    ref_root = Path(reference_dir) if reference_dir else root.with_name(root.name + ".images")
    rng = random.Random(seed)
    with VersionWriter(root, reference=reference, shard_samples=shard_size) as writer:
        for n in range(images):
            png, record = make_sample(rng, image_size)
            sha = hashlib.sha256(png).hexdigest()
            record = {"image": sha, **record}
            extra: dict[str, Any] = {}
            if reference:
                ref_root.mkdir(parents=True, exist_ok=True)
                path = ref_root / f"{sha}.png"
                path.write_bytes(png)
                record["uri"] = extra["uri"] = path.resolve().as_uri()
            writer.add_stage1(f"{n:09d}", record, None if reference else (png, "png"))
            _write_stage2(writer, n, record, extra)
        writer.finish(
            {
                "id": f"synthetic-{seed}-{images}",
                "created_at": "1970-01-01T00:00:00Z",
                "created_by": "training.data.synthetic",
                "sources": ["synthetic shapes"],
                "filters": {},
                "derived_from": [],
            }
        )
    return root


def _write_stage2(
    writer: VersionWriter, n: int, record: dict[str, Any], extra: dict[str, Any]
) -> None:
    """One made-up question per image about its first region: every fifth image's question is
    an evaluation item; the others are an RL prompt and a one-step trajectory that corrects a
    wrong position (not approved, so it has no stop row; ``stage2_rows`` has the row rules)."""
    first = record["regions"][0]
    question = f"Where is the {first['phrase']}?"
    wrong = f"The {first['phrase']} is at the centre."
    right = f"{first['caption']} at {first['box']}."
    row = {"id": n, "image": record["image"], "question": question, "reference": right}
    if n % 5 == 0:
        writer.eval_items.add(row)
        return
    evidence = "\n".join(f"{r['phrase']}, {r['box']}, {r['caption']}" for r in record["regions"])
    records = trajectory_records(
        trajectory={"id": n, "image": record["image"], "question": question, "final_answer": right},
        steps=[StepRow(0, wrong, "The position is wrong.", ["spatial"])],
        evidence=evidence,
        approved=False,
        extra=extra,
    )
    for sft in records.sft:
        writer.sft.add(sft)
    for rm in records.rm:
        writer.rm.add(rm)
    writer.rl_prompts.add(row)
    if records.llava is not None:
        writer.llava.add(records.llava)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training synth", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder of the new version")
    parser.add_argument("--images", type=int, default=512, help="number of images")
    parser.add_argument("--shard-size", type=int, default=128, help="images per shard")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference", action="store_true", help="reference mode: records carry uri"
    )
    args = parser.parse_args(argv)
    root = write_version(
        args.out,
        images=args.images,
        shard_size=args.shard_size,
        image_size=args.image_size,
        seed=args.seed,
        reference=args.reference,
    )
    print(root)
    return 0
