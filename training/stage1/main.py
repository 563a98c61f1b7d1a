"""``python -m training stage1 --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value ...]``

Under torchrun every rank runs this same command: ``torchrun --nproc-per-node 8 -m training
stage1 ...``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from training.config import ConfigError, command_parser, help_text, resolve_args
from training.models_available import check_model
from training.stage1.config import Stage1Config


def main(argv: Sequence[str] | None = None) -> int:
    args = command_parser(
        "stage1",
        "Stage-1 region-text pre-training (ITCL + RTCL + SCC).",
        "config keys (key=value):\n" + help_text(Stage1Config),
    ).parse_args(argv)
    try:
        config = resolve_args(Stage1Config, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Before torch and transformers load (seconds): a missing model fails at once.
    check_model(config.model, role="Stage-1 CLIP (model=)")
    from training.stage1.train import train  # heavy imports only once the config is valid

    result = train(config, args.data, args.out)
    if result:
        print(json.dumps(result, indent=2))
    return 0
