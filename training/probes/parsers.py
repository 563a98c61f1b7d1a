"""The three ways a model's free text becomes "yes", "no" or unparsed (FORMATS.md, "A probe set
on disk"). The scorer stores the raw text and the ``strict`` reading; every parser is applied
again at scoring time, so a run is never re-generated to read its answers another way.

- ``strict``: the answer is exactly a yes or a no, give or take case, spaces and one trailing
  period. What an instruction-following model asked for "a single word" should say.
- ``pope``: the rule of POPE's own ``evaluate.py`` (Li et al., 2023): keep the first sentence
  (up to the first "."), drop commas, and answer "no" when one of its words is ``No``, ``no``
  or ``not``; anything else, garbage and the empty answer included, is "yes". Its word set is
  kept case for case (``NO`` and ``Not`` are not in it) so that figures compare with the
  papers'; one deviation: words are split on any whitespace, not only on spaces, so a newline
  does not glue two words together.
- ``word``: the first of the words "yes" / "no" (any case) in the answer; unparsed when
  neither occurs. Tolerant of preambles ("Sure! Yes, there is.") without POPE's "not" rule.

Each parser is ``(text) -> "yes" | "no" | None``, pure and total.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Parsed = str | None  # "yes" | "no" | None (unparsed)

POPE_NO_WORDS = frozenset({"No", "no", "not"})  # POPE's evaluate.py, verbatim
_WORDS = re.compile(r"[a-z]+")


def parse_strict(text: str) -> Parsed:
    """Exactly yes or no, after lower-casing and stripping spaces and one trailing period.

    >>> [parse_strict(t) for t in ["Yes", " no ", "Yes.", "NO.", "yes..", "yes!", "Yes, it is"]]
    ['yes', 'no', 'yes', 'no', None, None, None]
    >>> parse_strict(" yes . ") is None, parse_strict("") is None, parse_strict(".") is None
    (False, True, True)
    """
    answer = text.strip().lower()
    if answer.endswith("."):
        answer = answer[:-1].strip()
    return answer if answer in ("yes", "no") else None


def parse_pope(text: str) -> Parsed:
    """POPE's rule: "no" when the first sentence holds the word No, no or not, else "yes".

    >>> [parse_pope(t) for t in ["No", "Yes.", "There is not a dog.", "no, there is none"]]
    ['no', 'yes', 'no', 'no']
    >>> [parse_pope(t) for t in ["Yes. There is no cat.", "Nothing here", "", "%$#@"]]
    ['yes', 'yes', 'yes', 'yes']
    >>> [parse_pope(t) for t in ["NO", "Not at all", "Yes, not really", "Yes\\nno"]]
    ['yes', 'yes', 'no', 'no']
    """
    sentence = text.split(".", 1)[0].replace(",", "")
    return "no" if POPE_NO_WORDS.intersection(sentence.split()) else "yes"


def parse_word(text: str) -> Parsed:
    """The first of the words yes / no, in any case; None when neither appears.

    >>> [parse_word(t) for t in ["Sure! Yes, there is.", "NO.", "I think no, but yes", "not"]]
    ['yes', 'no', 'no', None]
    >>> [parse_word(t) for t in ["nothing", "eyes", "yes-ish", "", "there is not a dog."]]
    [None, None, 'yes', None, None]
    """
    for word in _WORDS.findall(text.lower()):
        if word in ("yes", "no"):
            return word
    return None


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "strict": parse_strict,
    "pope": parse_pope,
    "word": parse_word,
}
