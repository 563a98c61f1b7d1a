"""``python -m training <command> ...``: Stage-1, Stage-2, the rectification loop and tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

USAGE = """usage: python -m training <command> [args]

commands:
  stage1     Stage-1 region-text pre-training (ITCL + RTCL + SCC)
  synth      write a synthetic dataset version (coloured shapes) in the FORMATS.md layout
  sft        Stage-2 SFT of the MLLM M on stage2/sft.jsonl (Eq. 7, loss on A*_{k+1} only)
  rm         train the rectification module (RM) on stage2/rm.jsonl
  rl         Stage-2 RL of M with the RM as reward (GRPO, KL to the reference)
  hybrid     SFT then RL in one run (the preprint's best setting, §4.5)
  rectify    run the iterative rectification loop A_0 -> F_0 -> A_1 ... on a JSONL of items
  tiny-clip  write a tiny random CLIPModel with an offline tokenizer (tests, CPU trials)
  tiny-llava write a tiny random LLaVA (and a tiny text RM) with an offline tokenizer
  bench      score a checkpoint or an endpoint on a probe set (POPE-style yes/no questions)
  bench-compare  paired McNemar test of two bench runs on the same probe set
  study-plan the commands of a study (study.json): the ablation arms as one plan
  swap-tower M with a Stage-1 vision tower in place, saved (a study's w/o Stage-2 arm)
"""

# command -> (module, function); imported only when run, so one command's heavy imports never
# slow another.
COMMANDS = {
    "stage1": ("training.stage1.main", "main"),
    "synth": ("training.data.synthetic", "main"),
    "tiny-clip": ("training.stage1.tiny", "main"),
    "sft": ("training.stage2.sft", "sft_main"),
    "rm": ("training.stage2.sft", "rm_main"),
    "rl": ("training.stage2.rl", "rl_main"),
    "hybrid": ("training.stage2.hybrid", "main"),
    "rectify": ("training.stage2.rectify", "main"),
    "tiny-llava": ("training.stage2.tiny", "main"),
    "bench": ("training.probes.scorer", "main"),
    "bench-compare": ("training.probes.compare", "main"),
    "study-plan": ("training.studies.cli", "main"),
    "swap-tower": ("training.studies.tower", "main"),
}


def _command(name: str) -> Callable[[Sequence[str]], int] | None:
    if name not in COMMANDS:
        return None
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = _command(argv[0])
    if command is None:
        print(f"unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from training.models_available import ModelNotAvailable

    try:
        return command(argv[1:])
    except ModelNotAvailable as error:
        # One line the job page shows as the reason; a traceback would only bury it.
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
