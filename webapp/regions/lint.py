"""Consistency checks on the regions of one image: plain functions on plain values, no Django.

Each check returns the reasons (short strings) it finds for a region; a region with any reason
is flagged. Geometry is never re-implemented here: where a box sits comes from
``training.formats.position_words`` (the rule template captions are written with) and how two
boxes stand to each other from ``training.geometry.spatial_relation`` (docs/formats.md), so the
lint, the captions and the Stage-1 labels always agree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from training.formats import POSITION_WORDS, position_words
from training.geometry import INVERSE, Box, iou, spatial_relation

DUPLICATE_IOU = 0.9
# A box under this share of the image, or narrower than this many pixels, is degenerate.
MIN_AREA_FRACTION = 0.0002
MIN_SIDE_PX = 2.0
MAX_ASPECT_RATIO = 20.0


@dataclass(frozen=True)
class LintRegion:
    id: int
    box: Box
    phrase: str
    caption: str


# --- Spatial words ------------------------------------------------------------------------------

# Absolute position words in a caption, and the words of ``position_words`` that contradict them.
_SIDE = r"\b(?:on|to|at|in) the (?:far |upper |lower |top |bottom )?"
_END = r"\b(?:at|on|in) the "
_ABSOLUTE = [
    (re.compile(_SIDE + r"left\b|\bleft side\b"), "left", "right"),
    (re.compile(_SIDE + r"right\b|\bright side\b"), "right", "left"),
    (re.compile(_END + r"top\b|\bin the upper\b|\btop (?:left|right)\b"), "top", "lower|bottom"),
    (re.compile(_END + r"bottom\b|\bin the lower\b|\bbottom (?:left|right)\b"), "bottom", "upper|top"),  # noqa: E501
]  # fmt: skip

# Relation words a caption may put before another region's phrase, as FORMATS.md relations.
# "next to", "behind" and "in front of" name depth or mere nearness: no 2-D box contradicts them.
_RELATION_WORDS = [
    (r"(?:to the )?left of", "left of"),
    (r"(?:to the )?right of", "right of"),
    (r"above|over|on top of", "above"),
    (r"below|under|underneath|beneath", "below"),
    (r"inside|within", "inside"),
    (r"containing|holding", "contains"),
]
_ARTICLE = r"(?:the |a |an |another |some )?"


@functools.lru_cache(maxsize=8192)
def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def spatial_position_problems(caption: str, box: Box, width: int, height: int) -> list[str]:
    """A caption's absolute position words that contradict where the box is.

    >>> spatial_position_problems("a dog on the left", (80, 40, 100, 60), 100, 100)
    ['says "left" but the box is on the right']
    >>> spatial_position_problems("a dog on the left", (0, 40, 20, 60), 100, 100)
    []
    """
    text = _normal(caption)
    where = position_words(box, width, height)
    # The position part of "small in the upper right" is one of POSITION_WORDS' phrases.
    place = next((p for p in POSITION_WORDS.values() if where.endswith(p)), where)
    return [
        f'says "{said}" but the box is {place}'
        for pattern, said, contradicting in _ABSOLUTE
        if pattern.search(text) and re.search(rf"\b(?:{contradicting})\b", place)
    ]


def relation_problems(region: LintRegion, others: Sequence[LintRegion]) -> list[str]:
    """Relations a caption states to another region, named by its phrase, that the boxes deny.

    A statement is contradicted when the FORMATS.md relation between the two boxes is the
    inverse of the stated one ("left of the car" while the region is right of it).
    """
    text = _normal(region.caption)
    problems = []
    for other in others:
        name = _normal(other.phrase)
        if other.id == region.id or not name or name not in text:
            continue
        actual = spatial_relation(region.box, other.box)
        for words, stated in _RELATION_WORDS:
            said = re.search(rf"\b(?:{words}) {_ARTICLE}{re.escape(name)}\b", text)
            if said and actual == INVERSE[stated] and actual != stated:
                problems.append(f'says "{stated} {other.phrase}" but it is {actual} it')
    return problems


# --- Duplicates and degenerate boxes ------------------------------------------------------------


def duplicate_problems(region: LintRegion, others: Sequence[LintRegion]) -> list[str]:
    """Another box with the same phrase that overlaps this one with IoU above 0.9."""
    phrase = _normal(region.phrase)
    return [
        f"duplicate of #{other.id}"
        for other in others
        if other.id != region.id
        and _normal(other.phrase) == phrase
        and iou(region.box, other.box) > DUPLICATE_IOU
    ]


def degenerate_problems(box: Box, width: int, height: int) -> list[str]:
    """A tiny box or one with an extreme aspect ratio.

    >>> degenerate_problems((0, 0, 1, 50), 100, 100)
    ['degenerate: 1x50 px']
    >>> degenerate_problems((10, 10, 40, 40), 100, 100)
    []
    """
    w, h = box[2] - box[0], box[3] - box[1]
    tiny = w * h < MIN_AREA_FRACTION * width * height or min(w, h) < MIN_SIDE_PX
    extreme = max(w, h) / max(min(w, h), 1e-9) > MAX_ASPECT_RATIO
    return [f"degenerate: {w:g}x{h:g} px"] if tiny or extreme else []


# --- Caption and phrase -------------------------------------------------------------------------

SYNONYMS = [
    {"person", "man", "woman", "boy", "girl", "child", "kid", "people", "men", "women", "player"},
    {"car", "vehicle", "automobile", "taxi", "sedan"},
    {"dog", "puppy", "hound"},
    {"cat", "kitten", "kitty"},
    {"sofa", "couch"},
    {"bike", "bicycle"},
    {"motorbike", "motorcycle"},
    {"plane", "airplane", "aeroplane", "aircraft", "jet"},
    {"tv", "television", "monitor", "screen"},
    {"cup", "mug"},
    {"road", "street"},
    {"shirt", "top", "tshirt"},
    {"phone", "cellphone", "smartphone"},
]  # fmt: skip
_SYNONYMS_OF = {word: group for group in SYNONYMS for word in group}


def _stem(word: str) -> str:
    for ending, replacement in (("ies", "y"), ("ves", "f"), ("es", ""), ("s", "")):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return word[: -len(ending)] + replacement
    return word


def phrase_problems(phrase: str, caption: str) -> list[str]:
    """The phrase (or its head noun, or a synonym of it) does not occur in the caption.

    >>> phrase_problems("red car", "a red automobile parked")
    []
    >>> phrase_problems("dog", "a cat asleep")
    ['caption does not mention "dog"']
    """
    words = _normal(phrase).split()
    if not words or not caption.strip():
        return []
    text = _normal(caption)
    if " ".join(words) in text:
        return []
    caption_stems = {_stem(w) for w in text.split()}
    head = words[-1]
    accepted = {_stem(head)} | {_stem(w) for w in _SYNONYMS_OF.get(head, ())}
    accepted |= {_stem(w) for w in _SYNONYMS_OF.get(_stem(head), ())}
    if accepted & caption_stems:
        return []
    return [f'caption does not mention "{phrase.strip()}"']


# --- All checks ---------------------------------------------------------------------------------


def may_affect(changed: LintRegion, region: LintRegion) -> bool:
    """Whether a change to ``changed``'s phrase or box can move ``region``'s reasons.

    Only through a shared phrase (duplicates) or through ``region``'s caption naming
    ``changed``'s phrase (relations); a caption change moves nobody's reasons but its own.

    >>> car = LintRegion(1, (0, 0, 10, 10), "car", "a car")
    >>> may_affect(car, LintRegion(2, (50, 0, 60, 10), "dog", "a dog left of the car"))
    True
    >>> may_affect(car, LintRegion(3, (50, 0, 60, 10), "dog", "a dog asleep"))
    False
    """
    name = _normal(changed.phrase)
    return region.id == changed.id or (
        bool(name) and (_normal(region.phrase) == name or name in _normal(region.caption))
    )


def lint_regions(
    regions: Sequence[LintRegion], width: int, height: int, only: set[int] | None = None
) -> dict[int, list[str]]:
    """Every region's reasons, by id (an empty list means clean); with ``only``, just those.

    Duplicates compare pairs of the same phrase only; relations look for each other region's
    phrase in the caption. The bulk command runs image by image; a save lints the regions its
    change can affect (``may_affect``) against all the others.
    """
    same_phrase: dict[str, list[LintRegion]] = {}
    for region in regions:
        same_phrase.setdefault(_normal(region.phrase), []).append(region)
    result = {}
    for region in regions:
        if only is not None and region.id not in only:
            continue
        reasons = degenerate_problems(region.box, width, height)
        reasons += spatial_position_problems(region.caption, region.box, width, height)
        reasons += relation_problems(region, regions)
        reasons += duplicate_problems(region, same_phrase[_normal(region.phrase)])
        reasons += phrase_problems(region.phrase, region.caption)
        result[region.id] = reasons
    return result
