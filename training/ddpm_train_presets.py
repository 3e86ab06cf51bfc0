"""Training configs: named presets (TOML files in `configs/`) and command-line overrides.

A preset file sets some keys of the library's config (`ddpm_tf.config`: the sections, keys,
defaults and checks), and each `section.key=value` on the command line sets one more (values in
TOML syntax: `1e-4`, `[1, 2, 2]`, `true`; a bare word is a string). A key under its old name
(`ddpm_tf.config.OLD_KEYS`) is taken under its new one, with a one-line note on stderr. The resolved
config is saved in the run directory.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from ddpm_tf.config import ConfigError, current_key, finish, new_config, set_key

PRESETS_PACKAGE = "ddpm_tf.training.configs"


def preset_names() -> list[str]:
    files = resources.files(PRESETS_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def _read_preset(name_or_path: str) -> tuple[str, dict]:
    """(name, overrides) of a named preset or of a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        text, name = path.read_text(), path.stem
    else:
        if name_or_path not in preset_names():
            raise ConfigError(
                f"unknown config preset {name_or_path!r}; choose one of {preset_names()} or pass "
                "a .toml file."
            )
        text = resources.files(PRESETS_PACKAGE).joinpath(f"{name_or_path}.toml").read_text()
        name = name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {name_or_path} is not valid TOML: {err}") from err


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _current(key: str, where: str) -> str:
    """`key` under its current name; an old name (OLD_KEYS) is noted on stderr, once a use."""
    new = current_key(key)
    if new != key:
        print(f"note: {where}: {key} is now {new} (the old name still works)", file=sys.stderr)
    return new


def resolve(preset: str = "digits", overrides: list[str] = ()) -> tuple[str, dict]:
    """(name, config): the defaults updated by the preset, then by `KEY=VALUE` overrides."""
    name, file_values = _read_preset(preset)
    config = new_config()
    given = set()  # the keys the preset or the overrides set
    for section, values in file_values.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config {preset}: {section!r} must be a [section] table.")
        for key, value in values.items():
            key = _current(f"{section}.{key}", f"config {preset}")
            set_key(config, key, value)
            given.add(key)
    for item in overrides:
        key, value = parse_override(item)
        set_key(config, key, value)
        given.add(key)
    return name, finish(config, dataset_given="data.dataset" in given)


def parse_override(item: str) -> tuple[str, Any]:
    """(key under its current name, value) of a command-line `section.key=value`."""
    key, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} must look like section.key=value.")
    return _current(key.strip(), "override"), _parse_value(text.strip())
