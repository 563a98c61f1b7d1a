"""A word-level diff between two answers, for the editor (A_k beside A_{k+1}).

Words and the spaces between them are the tokens, so the pieces join back into the exact texts.
The pieces are plain strings: the template escapes them (model text is untrusted).
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import NamedTuple

TOKENS = re.compile(r"\s+|[^\s]+")


class Piece(NamedTuple):
    op: str  # "same", "ins" or "del"
    text: str


def word_diff(old: str, new: str) -> list[Piece]:
    """What changed from ``old`` to ``new``, word by word.

    >>> [tuple(p) for p in word_diff("a red car", "a blue car")]
    [('same', 'a '), ('del', 'red'), ('ins', 'blue'), ('same', ' car')]
    """
    a, b = TOKENS.findall(old), TOKENS.findall(new)
    pieces: list[Piece] = []
    matcher = SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i0, i1, j0, j1 in matcher.get_opcodes():
        if tag == "equal":
            pieces.append(Piece("same", "".join(a[i0:i1])))
            continue
        if tag in ("delete", "replace"):
            pieces.append(Piece("del", "".join(a[i0:i1])))
        if tag in ("insert", "replace"):
            pieces.append(Piece("ins", "".join(b[j0:j1])))
    return pieces


def changed(pieces: list[Piece]) -> bool:
    return any(piece.op != "same" for piece in pieces)
