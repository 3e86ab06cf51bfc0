"""Training configs: defaults, named presets (TOML files in `configs/`) and command-line overrides.

A config is a nested dict with the sections below; a preset file overrides some keys, and each
`section.key=value` on the command line overrides one more (values in TOML syntax: `1e-4`,
`[1, 2, 2]`, `true`; a bare word is a string). The resolved config is saved in the run directory.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from ddpm_tf.recipe import build_diffusion, build_schedule
from ddpm_tf.sampling.spec import SamplingSpec

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "dataset": "sklearn_digits",  # a tfds name (embedded: sklearn_digits, mnist5k)
        "images": "",  # or a folder of PNG/JPEG files (subfolders are classes if conditional)
        "channels": 0,  # image folders: 1 (gray) or 3 (RGB, the default); tfds keeps its own
        "train_split": "train",
        "test_split": "test",
        "image_size": 0,  # 0: the dataset's own size
        "random_flip": False,
        "class_conditional": False,  # train with labels (classifier-free guidance)
    },
    "model": {
        "preset": "tiny_8",  # a ddpm_tf.unet preset; the keys below override it
        "ch": None,
        "ch_mult": None,
        "num_res_blocks": None,
        "attn_resolutions": None,
        "dropout": None,
        "num_heads": None,
        "num_groups": None,
        "use_scale_shift_norm": None,
    },
    "diffusion": {
        "schedule": "linear",
        "timesteps": 1000,
        "mean_type": "epsilon",
        "var_type": "fixed_large",
        "loss_type": "mse",
        "min_snr_gamma": 0.0,  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5
    },
    "train": {
        "steps": 6000,
        "batch_size": 64,
        "lr": 2e-4,
        "warmup": 500,
        "lr_decay": "constant",  # constant | cosine | linear: after the warm-up, down to 0 at steps
        "ema_decay": 0.999,
        "grad_clip": 1.0,
        "timestep_sampler": "uniform",
        "label_dropout": 0.1,
        "seed": 0,
        "mixed_precision": False,  # false | "float16" (loss-scaled) | "bfloat16"; true = "float16"
        "jit_compile": False,
        "strategy": "default",  # default | mirrored | multi_worker | tpu
    },
    "run": {
        "checkpoint_every": 500,
        "keep": 3,
        "log_every": 100,
        "sample_every": 2000,
        "eval_every": 2000,
        "eval_batches": 4,
        "bpd_examples": 32,  # test images whose exact bound is logged at each evaluation (0: off)
        "num_samples": 64,
        "fid_samples": 0,  # samples scored by FID at each evaluation (0: off; needs classifier)
        "classifier": "",  # a .keras classifier from ddpm-classifier, for fid_samples
    },
    # How the sample grids of a run are drawn: the fields of ddpm_tf.SamplingSpec.
    "sampling": SamplingSpec(method="ddim", steps=100).to_dict(),
}

# Keys a run may change when it is resumed: its length, its bookkeeping and how grids are sampled.
MAY_CHANGE = ("train.steps", "run", "sampling")

PRESETS_PACKAGE = "ddpm_tf.training.configs"


class ConfigError(ValueError):
    """A preset, a file or an override is not valid."""


# WarmupSchedule's argument -> the train key that sets it (build_schedule).
_SCHEDULE_KEYS = {
    "`learning_rate`": "train.lr",
    "`warmup_steps`": "train.warmup",
    "`decay_steps`": "train.steps",
    "`decay`": "train.lr_decay",
}


def _schedule_keys(message: str) -> str:
    """A WarmupSchedule error in the words of the config."""
    for arg, key in _SCHEDULE_KEYS.items():
        message = message.replace(arg, key)
    return message


# train.mixed_precision -> the Keras dtype policy of the network. The diffusion mathematics, the
# losses, the EMA and the network's output head stay float32 under every policy.
PRECISION_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def precision_policy(value: bool | str) -> str:
    """The Keras dtype policy of a `train.mixed_precision` value (false, "float16", "bfloat16")."""
    if isinstance(value, bool):  # true: float16, as before "bfloat16" existed
        return PRECISION_POLICIES["float16"] if value else "float32"
    if value not in PRECISION_POLICIES:
        raise ConfigError(
            f'train.mixed_precision must be false, "float16" or "bfloat16" (true means '
            f'"float16"), got {value!r}.'
        )
    return PRECISION_POLICIES[value]


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


def _check_type(key: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"{key} must be a {type(default).__name__} (like {default!r}), got {value!r}."
        )
    return value


def _set(config: dict, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if section not in config or not name:
        raise ConfigError(
            f"unknown config key {key!r}: keys are section.name with sections {sorted(config)}."
        )
    if name not in config[section]:
        close = difflib.get_close_matches(name, config[section], n=3)
        hint = f" Did you mean {[f'{section}.{c}' for c in close]}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}.{hint}")
    if section == "sampling" or key == "train.mixed_precision":
        # Checked in `validate`: [sampling] as a whole by SamplingSpec, the precision (a bool or a
        # dtype name) by `precision_policy`.
        config[section][name] = value
    else:
        config[section][name] = _check_type(key, DEFAULTS[section][name], value)


def resolve(preset: str = "digits", overrides: list[str] = ()) -> tuple[str, dict]:
    """(name, config): DEFAULTS updated by the preset, then by `KEY=VALUE` overrides."""
    name, file_values = _read_preset(preset)
    config = copy.deepcopy(DEFAULTS)
    given = set()  # the keys the preset or the overrides set
    for section, values in file_values.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config {preset}: {section!r} must be a [section] table.")
        for key, value in values.items():
            _set(config, f"{section}.{key}", value)
            given.add(f"{section}.{key}")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value.")
        _set(config, key.strip(), _parse_value(text.strip()))
        given.add(key.strip())
    _choose_data_source(config["data"], dataset_given="data.dataset" in given)
    validate(config)
    return name, config


def _choose_data_source(data: dict, dataset_given: bool) -> None:
    """A run reads a folder (data.images) or a tfds dataset (data.dataset), never both."""
    if not data["images"]:
        if not data["dataset"]:
            raise ConfigError("set data.dataset (a tfds name) or data.images (a folder).")
        return
    if dataset_given and data["dataset"]:
        raise ConfigError(
            f"data.images={data['images']!r} and data.dataset={data['dataset']!r} are both set; "
            "a run reads either a folder of images or a tfds dataset: drop one (--images uses the "
            "folder64 preset unless --config names a preset without a dataset)."
        )
    data["dataset"] = ""
    if data["channels"] not in (0, 1, 3):
        raise ConfigError(f"data.channels must be 1 (gray) or 3 (RGB), got {data['channels']}.")
    data["channels"] = data["channels"] or 3
    if data["image_size"] < 1:
        raise ConfigError("data.image_size must be >= 1 for an image folder, e.g. 64.")


def validate(config: dict) -> None:
    """Range checks the library would otherwise raise later, after data loading."""
    train, run = config["train"], config["run"]
    precision_policy(train["mixed_precision"])
    for key in ("steps", "batch_size"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {train[key]}.")
    for key in ("checkpoint_every", "keep", "log_every", "sample_every", "eval_every"):
        if run[key] < 1:
            raise ConfigError(f"run.{key} must be >= 1, got {run[key]}.")
    if run["bpd_examples"] < 0:
        raise ConfigError(f"run.bpd_examples must be >= 0, got {run['bpd_examples']}.")
    if run["fid_samples"] < 0 or run["fid_samples"] == 1:
        raise ConfigError(f"run.fid_samples must be 0 (off) or >= 2, got {run['fid_samples']}.")
    if run["fid_samples"] and not run["classifier"]:  # the file is checked when the run starts
        raise ConfigError(
            f"run.fid_samples={run['fid_samples']} scores samples with a classifier: train one "
            "with `ddpm-classifier --dataset NAME --out PATH.keras` and set run.classifier=PATH.keras."
        )
    try:
        build_schedule(train)
    except ValueError as err:
        raise ConfigError(_schedule_keys(str(err))) from None
    try:
        SamplingSpec.from_dict(config["sampling"])
    except ValueError as err:
        raise ConfigError(f"[sampling] {err}") from None
    try:  # NumPy only: no TensorFlow op may run before a multi-worker strategy exists
        build_diffusion(config["diffusion"])
    except ValueError as err:
        raise ConfigError(f"[diffusion] {err}") from None
