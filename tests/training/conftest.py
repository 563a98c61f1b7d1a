"""Fixtures for the training tests: a tiny random CLIP saved to disk and synthetic versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.synthetic import write_version
from training.stage1.tiny import make_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def shapes_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 images in 4 shards: enough signal for the smoke run to learn from."""
    return write_version(tmp_path_factory.mktemp("versions") / "shapes", images=512, shard_size=128)


@pytest.fixture
def small_version(tmp_path: Path) -> Path:
    return write_version(tmp_path / "small", images=40, shard_size=16)
