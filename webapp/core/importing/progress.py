"""How an import reports progress: a ``(stage, done, total)`` callback, and a terminal bar.

Services take any ``Progress`` callable (the API passes none); the management commands pass
a ``ProgressBar``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

Progress = Callable[[str, int, int], None]


class ProgressBar:
    """One tqdm bar per stage, on stderr; tqdm hides itself when stderr is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.stage = ""
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, file=self.stream, disable=None, unit="img")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
