"""``python -m training <command> ...``: stage1, synth, tiny-clip."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: python -m training <command> [args]

commands:
  stage1     Stage-1 region-text pre-training (ITCL + RTCL + SCC)
  synth      write a synthetic dataset version (coloured shapes) in the FORMATS.md layout
  tiny-clip  write a tiny random CLIPModel with an offline tokenizer (tests, CPU trials)
"""


def _command(name: str) -> Callable[[Sequence[str]], int] | None:
    if name == "stage1":
        from training.stage1.main import main as stage1

        return stage1
    if name == "synth":
        from training.data.synthetic import main as synth

        return synth
    if name == "tiny-clip":
        from training.stage1.tiny import main as tiny

        return tiny
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = _command(argv[0])
    if command is None:
        print(f"unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
