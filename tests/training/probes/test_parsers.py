"""The three answer parsers of FORMATS.md, on the answers models really give."""

from __future__ import annotations

import pytest

from training.probes.parsers import PARSERS, parse_pope, parse_strict, parse_word


def test_the_parsers_are_named_as_formats_md_names_them():
    assert list(PARSERS) == ["strict", "pope", "word"]
    assert PARSERS["strict"] is parse_strict
    assert PARSERS["pope"] is parse_pope
    assert PARSERS["word"] is parse_word


@pytest.mark.parametrize(
    ("text", "strict", "pope", "word"),
    [
        ("Yes", "yes", "yes", "yes"),
        ("yes.", "yes", "yes", "yes"),
        ("  NO.  ", "no", "yes", "no"),  # POPE's word set is case-sensitive: "NO" is not in it
        ("No", "no", "no", "no"),
        ("no", "no", "no", "no"),
        ("There is not a dog.", None, "no", None),
        ("There is no dog in the image.", None, "no", "no"),
        ("Yes, there is a dog. No cat though.", None, "yes", "yes"),  # first sentence only
        ("No, there is not.", None, "no", "no"),
        ("Nope", None, "yes", None),
        ("%%% garbage &&&", None, "yes", None),
        ("", None, "yes", None),
        ("yes..", None, "yes", "yes"),
        ("Yes!", None, "yes", "yes"),
        ("I see eyes and a nose", None, "yes", None),  # "eyes" and "nose" hold no yes/no word
        ("Answer: no\nThe image shows a cat", None, "no", "no"),
    ],
)
def test_each_parser_reads_an_answer_as_documented(text, strict, pope, word):
    assert (parse_strict(text), parse_pope(text), parse_word(text)) == (strict, pope, word)
