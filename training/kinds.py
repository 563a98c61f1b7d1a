"""The config class of each training command, by command name (``python -m training NAME``).

The web app builds its job forms and checks a job's config from this mapping, through
``training.config.resolve``; the modules it names import no torch, so the web process never
loads it.
"""

from __future__ import annotations

from training.stage1.config import Stage1Config
from training.stage2.config import HybridConfig, RLConfig, RMConfig, SFTConfig

KINDS: dict[str, type] = {
    "stage1": Stage1Config,
    "sft": SFTConfig,
    "rm": RMConfig,
    "rl": RLConfig,
    "hybrid": HybridConfig,
}
