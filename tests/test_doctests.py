"""Every doctest example in the code base holds.

Modules are found by looking for ``>>>`` in the source, so a new example is checked without
being registered anywhere.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webapp", "workers", "training")


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts or ">>>" not in path.read_text(encoding="utf-8"):
                continue
            relative = path.relative_to(ROOT).with_suffix("")
            names.append(".".join(relative.parts).removesuffix(".__init__"))
    return names


MODULES = _modules_with_examples()


def test_examples_are_found():
    assert "training.stage2.prompts" in MODULES and "training.llm" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} example(s) failed"
