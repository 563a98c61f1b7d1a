"""Fixtures of the scorer tests: the tiny random LLaVA saved to disk (loaded back through
``from_pretrained`` by the scorer itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.stage2.tiny import build_tiny_llava


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
