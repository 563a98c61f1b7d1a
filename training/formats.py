"""The words of the on-disk formats, in one place (``docs/formats.md``).

Error types tag trajectories and evaluation ratings; the stop phrase ends an approved
trajectory and is what the rectification module answers when nothing is left to correct
(``is_stop`` reads it back, as the loop, the rewards and the Stage-2 rows do); the
size and position words are *the* geometry-to-words rule: template captions are written with
``position_words`` and the review UI's spatial lint checks captions against it, so the two
always agree. Plain values, no Django, no torch.
"""

from __future__ import annotations

import math
import re

from training.geometry import Box

#: Error types (trajectories and evaluation), in the row order of the preprint's Table 3.
ERROR_TYPES: tuple[str, ...] = ("object", "attribute", "spatial", "reasoning")

#: The feedback F_k of an approved trajectory's last step, and the RM's "nothing to correct".
STOP_PHRASE = "No further corrections needed."

_NOT_A_LETTER = re.compile(r"[^a-z ]+")


def _words(text: str) -> str:
    return " ".join(_NOT_A_LETTER.sub(" ", text.lower()).split())


def is_stop(feedback: str | None) -> bool:
    """Whether the RM's feedback ends the loop: empty, or the stop phrase (§3.3.3).

    Case, punctuation, quotes and surrounding whitespace are ignored, so ``"no further
    corrections needed"`` counts; a longer text that merely contains the phrase does not,
    because it carries corrections.

    >>> is_stop("No further corrections needed.")
    True
    >>> is_stop(' "no further corrections needed" ')
    True
    >>> is_stop("")
    True
    >>> is_stop("The car is blue. No further corrections needed otherwise.")
    False
    """
    if feedback is None:
        return True
    return _words(feedback) in ("", _words(STOP_PHRASE))


# Size words from the box's share of the image area: below each bound, that word.
TINY_AREA = 0.02
SMALL_AREA = 0.10
MEDIUM_AREA = 0.40  # between SMALL_AREA and this no size word is written
SIZE_WORDS = ((TINY_AREA, "tiny"), (SMALL_AREA, "small"), (MEDIUM_AREA, ""), (math.inf, "large"))

# The box centre's cell in a 3x3 grid of the image: rows top/middle/bottom, columns
# left/centre/right. Cell edges belong to the cell after them (a centre at exactly 1/3 of the
# width is in the centre column).
POSITION_WORDS = {
    ("top", "left"): "in the upper left",
    ("top", "centre"): "at the top",
    ("top", "right"): "in the upper right",
    ("middle", "left"): "on the left",
    ("middle", "centre"): "in the centre",
    ("middle", "right"): "on the right",
    ("bottom", "left"): "in the lower left",
    ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "in the lower right",
}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")


def size_word(box: Box, width: int, height: int) -> str:
    """``tiny``, ``small``, ``""`` (medium) or ``large`` from the box's share of the image.

    >>> size_word((0, 0, 10, 10), 100, 100), size_word((0, 0, 30, 30), 100, 100)
    ('tiny', 'small')
    >>> size_word((0, 0, 50, 50), 100, 100), size_word((0, 0, 80, 80), 100, 100)
    ('', 'large')
    """
    x0, y0, x1, y1 = box
    fraction = max(x1 - x0, 0) * max(y1 - y0, 0) / max(width * height, 1)
    return next(word for bound, word in SIZE_WORDS if fraction < bound)


def grid_cell(box: Box, width: int, height: int) -> tuple[str, str]:
    """(row, column) of the box centre in a 3x3 grid of the image.

    >>> grid_cell((0, 90, 10, 100), 100, 100)
    ('bottom', 'left')
    >>> grid_cell((30, 30, 70, 70), 100, 100)
    ('middle', 'centre')
    """
    # 3 * centre / size, written so that a centre exactly on a third is exact in floats.
    column = COLUMNS[min(max(int(3 * (box[0] + box[2]) / (2 * max(width, 1))), 0), 2)]
    row = ROWS[min(max(int(3 * (box[1] + box[3]) / (2 * max(height, 1))), 0), 2)]
    return row, column


def position_words(box: Box, width: int, height: int) -> str:
    """Size word and position words for a box, e.g. ``"small in the lower left"``.

    The size word (possibly none) comes first and belongs before the noun; the position
    words follow it. ``template_caption`` splits them around the phrase; the spatial lint
    compares a caption's words against this.

    >>> position_words((0, 85, 10, 100), 100, 100)
    'tiny in the lower left'
    >>> position_words((25, 25, 75, 75), 100, 100)
    'in the centre'
    >>> position_words((0, 0, 100, 90), 100, 100)
    'large in the centre'
    >>> position_words((70, 0, 100, 30), 100, 100)
    'small in the upper right'
    """
    row, column = grid_cell(box, width, height)
    return " ".join(w for w in (size_word(box, width, height), POSITION_WORDS[row, column]) if w)
