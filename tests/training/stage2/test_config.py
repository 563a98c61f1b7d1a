"""Stage-2 configuration: typed keys, unknown keys refused, doctests of the helpers."""

from __future__ import annotations

import doctest

import pytest

import training.config
import training.stage2.sft
from training.config import ConfigError, resolve
from training.stage2.config import (
    DEFAULT_M,
    DEFAULT_RM,
    LANGUAGE_MODEL_PROJECTIONS,
    RMConfig,
    SFTConfig,
)


@pytest.mark.parametrize("module", [training.config, training.stage2.sft])
def test_the_docstring_examples_hold(module) -> None:
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


def test_defaults_name_the_preprint_models() -> None:
    assert resolve(SFTConfig, {}, {}).model == DEFAULT_M == "llava-hf/llava-1.5-7b-hf"
    assert resolve(RMConfig, {}, {}).model == DEFAULT_RM


def test_values_are_typed_and_the_command_line_beats_the_file() -> None:
    config = resolve(SFTConfig, {"lr": 0.1, "seed": 3}, {"lr": "1e-4", "lora": "true"})
    assert config.lr == 1e-4 and config.seed == 3 and config.lora == "true"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rm_vision": "true"}, "unknown config key 'rm_vision'"),  # an RM key is not SFT's
        ({"batch_size": "0"}, "batch_size must be >= 1"),
        ({"precision": "fp8"}, "precision='fp8'"),
        ({"max_steps": "1.5"}, "max_steps='1.5' is not a valid int"),
    ],
)
def test_bad_values_are_refused_by_name(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(SFTConfig, {}, values)


def test_lora_targets_the_language_model_not_the_vision_tower() -> None:
    import re

    names = [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.layers.3.mlp.down_proj",  # a text-only RM
        "model.vision_tower.encoder.layers.0.self_attn.q_proj",
        "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
        "model.multi_modal_projector.linear_1",
    ]
    hits = [n for n in names if re.fullmatch(LANGUAGE_MODEL_PROJECTIONS, n)]
    assert hits == names[:2]
