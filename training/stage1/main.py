"""``python -m training stage1 --data VERSION_DIR --out RUN_DIR [--config FILE] [key=value ...]``

Under torchrun every rank runs this same command: ``torchrun --nproc-per-node 8 -m training
stage1 ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from training.stage1.config import ConfigError, help_text, load_file, parse_overrides, resolve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training stage1",
        description="Stage-1 region-text pre-training (ITCL + RTCL + SCC).",
        epilog="config keys (key=value):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset version folder (FORMATS.md layout)")
    p.add_argument("--out", required=True, help="run folder; an existing run is continued")
    p.add_argument("--config", help="JSON or TOML file of config keys")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, last wins")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = resolve(
            load_file(args.config) if args.config else {}, parse_overrides(args.overrides)
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from training.stage1.train import train  # heavy imports only once the config is valid

    result = train(config, args.data, args.out)
    if result:
        print(json.dumps(result, indent=2))
    return 0
