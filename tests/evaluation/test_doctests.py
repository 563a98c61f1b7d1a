"""The doctest examples in the evaluation modules are true."""

from __future__ import annotations

import doctest

import pytest

from webapp.evaluation import assignment, sampling


@pytest.mark.parametrize("module", [assignment, sampling])
def test_the_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
