"""Configuration machinery shared by every training command (Stage-1, Stage-2 SFT/RM/RL, hybrid).

A config is a dataclass whose fields carry help text (``option(default, help)``). ``resolve``
is the one way a config is made from values, for the command line and the web app alike:
defaults < preset < ``--config FILE`` (JSON or TOML) < ``key=value`` arguments, each coerced to
its field's type, then the config's own ``validate()``. Unknown keys are rejected with the
closest known names, so a typo never silently trains with a default.

A config class takes part through three optional hooks:

- ``PRESETS`` (a ``ClassVar``): named values applied before the others; the class has a
  ``preset`` field naming one.
- ``validate(self)``: checks across keys, raising ``ConfigError``.
- ``compose(values)`` (a classmethod): a config made of other configs (the hybrid command, one
  per phase) splits the merged values and resolves each part itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and the help text the CLI prints."""
    return field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


def coerce(name: str, value: Any, kind: Any) -> Any:
    """``value`` (often a string from the command line) as the type ``kind`` of field ``name``.

    >>> coerce("lr", "1e-4", float), coerce("lora", "off", bool), coerce("seed", 3.0, int)
    (0.0001, False, 3)
    """
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except ValueError as err:
        raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from err


def did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    """The hint appended to an unknown key's message: the closest known names, if any.

    >>> did_you_mean("batchsize", ["batch_size", "lr"]), did_you_mean("zzz", ["lr"])
    (' (did you mean batch_size?)', '')
    """
    close = difflib.get_close_matches(key, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_keys(cls: type, values: dict[str, Any], source: str) -> None:
    """Raise ``ConfigError`` for a key that is not a field of ``cls``, with close matches."""
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in {source}{did_you_mean(key, known)}")


def load_file(path: str | Path) -> dict[str, Any]:
    """The key/value object of a JSON or TOML config file."""
    path = Path(path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds one object of key = value")
    return data


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["lr=1e-4", "lora=true"]`` -> ``{"lr": "1e-4", "lora": "true"}``."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        values[key.strip()] = value
    return values


def resolve(cls: type[T], file_values: dict[str, Any], cli_values: dict[str, Any]) -> T:
    """A checked instance of ``cls``: defaults < preset < file < command line, typed, then
    ``validate()``d (see the module docstring for the hooks).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     lr: float = option(0.1, "learning rate")
    >>> resolve(Demo, {"lr": 1}, {"lr": "2e-3"})
    Demo(lr=0.002)
    >>> resolve(Demo, {}, {"lrr": "1"})
    Traceback (most recent call last):
    ...
    training.config.ConfigError: unknown config key 'lrr' in the command line (did you mean lr?)
    """
    compose = getattr(cls, "compose", None)
    if compose is not None:
        return typing.cast(T, compose({**file_values, **cli_values}))
    check_keys(cls, file_values, "the config file")
    check_keys(cls, cli_values, "the command line")
    merged: dict[str, Any] = {**file_values, **cli_values}
    presets: dict[str, dict[str, Any]] | None = getattr(cls, "PRESETS", None)
    if presets is not None:
        default = next(f.default for f in dataclasses.fields(cls) if f.name == "preset")  # type: ignore[arg-type]
        preset = str(merged.get("preset", default))
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; one of {', '.join(presets)}")
        merged = {**presets[preset], **merged, "preset": preset}
    hints = typing.get_type_hints(cls)
    config = cls(**{k: coerce(k, v, hints[k]) for k, v in merged.items()})
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as a JSON-ready dict (what ``RUN_DIR/config.json`` holds)."""
    return dataclasses.asdict(config)


def help_text(cls: type) -> str:
    """One entry per key with its default and help, for the CLI's ``--help`` epilog."""
    lines = []
    for f in dataclasses.fields(cls):
        lines.append(f"  {f.name}={f.default!r}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def command_parser(
    command: str,
    description: str,
    epilog: str,
    *,
    out_help: str = "run folder; an existing run is continued",
) -> argparse.ArgumentParser:
    """The command line every training command shares: ``--data``, ``--out``, ``--config FILE``
    and ``key=value`` overrides; ``epilog`` lists the keys (``help_text``)."""
    p = argparse.ArgumentParser(
        prog=f"python -m training {command}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset version folder (FORMATS.md layout)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--config", help="JSON or TOML file of config keys")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, last wins")
    return p


def resolve_args(cls: type[T], args: argparse.Namespace) -> T:
    """``resolve`` of a ``command_parser`` command line: ``--config FILE`` < ``key=value``."""
    return resolve(
        cls, load_file(args.config) if args.config else {}, parse_overrides(args.overrides)
    )
