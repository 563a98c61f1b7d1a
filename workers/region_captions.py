"""What every region captioner takes and gives, and the crop the model captioners look at.

``RegionToCaption`` is one detected region (box, phrase, image); ``CaptionOutcome`` is what a
captioner answers for it. ``RegionCrops`` cuts each region out of its image with some context
around it, decoding each distinct image once per batch; the local captioner
(``workers.captioning_local``) and the LLM captioner (``workers.captioning_llm``) both use it.
Choosing a captioner is ``workers.captioning.make_captioner``.

No Django here.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from training.geometry import Box

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class RegionToCaption:
    key: str  # caller's id
    box: Box
    phrase: str
    image_width: int
    image_height: int
    global_caption: str = ""
    image: bytes | None = None  # whole image bytes; captioners that need pixels crop it


@dataclass(frozen=True)
class CaptionOutcome:
    key: str
    caption: str | None  # None when it failed permanently
    error: str | None = None  # the permanent reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Addition: the failure was transient (rate limits, timeouts) and retries ran out, so
    # retrying the item later may well succeed.
    retryable: bool = False


def context_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Integer crop box around ``box``, grown by ``margin`` of its size on each side and kept
    inside the image (at least one pixel each way).

    >>> context_box((40, 40, 60, 60), 100, 100, 0.15)
    (37, 37, 63, 63)
    >>> context_box((0, 0, 100, 50), 100, 100, 0.15)
    (0, 0, 100, 58)
    """
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left = min(max(math.floor(x0 - dx), 0), width - 1)
    top = min(max(math.floor(y0 - dy), 0), height - 1)
    right = max(min(math.ceil(x1 + dx), width), left + 1)
    bottom = max(min(math.ceil(y1 + dy), height), top + 1)
    return left, top, right, bottom


class RegionCrops:
    """Decodes each distinct image once per ``caption()`` call and cuts crops from it."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.decoded: dict[bytes, Image.Image] = {}

    def crop(self, region: RegionToCaption) -> Image.Image:
        from PIL import Image

        if region.image is None:
            raise ValueError("no image bytes given for this region")
        image = self.decoded.get(region.image)
        if image is None:
            with Image.open(io.BytesIO(region.image)) as opened:
                image = opened.convert("RGB")
            self.decoded[region.image] = image
        # Boxes are in the stored image's pixels; scale if the bytes are another size.
        sx, sy = image.width / region.image_width, image.height / region.image_height
        x0, y0, x1, y1 = region.box
        scaled = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        return image.crop(context_box(scaled, image.width, image.height, self.margin))
