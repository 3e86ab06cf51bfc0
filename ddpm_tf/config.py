"""The training config: its sections and keys, their defaults, types and checks, and old key names.

A config is a nested dict {section: {key: value}} with the sections of `DEFAULTS`. The keys of
`model`, `diffusion` and `train` are the names of the constructor arguments they set (`UNet` via
`from_preset`; `get_beta_schedule` and `GaussianDiffusion`; `WarmupSchedule` and `DiffusionModel`),
so one name serves from a TOML file to the constructor, as improved-diffusion's flags are its
factories' arguments. Three keys keep a name of their own where the argument's would say less:
`model.preset` and `diffusion.schedule` (the `name` of `from_preset` and `get_beta_schedule`) and
`train.steps` (the run's length, which is also `WarmupSchedule`'s `decay_steps`).

The schema lives here, in the library beside `ddpm_tf.recipe.build_model` (which builds the model of
a config), so that any code can check a config and read a run's `config.json` (`ddpm_tf.runs`); the
program `ddpm-train` only reads TOML presets and command-line overrides into it (`set_key`, then
`finish`). It is a module of its own rather than part of `recipe.py`: it covers the `data`, `run`
and `sampling` sections too, which the model never sees.

Keys renamed since configs were first saved are listed in `OLD_KEYS`: `upgrade` reads a saved config
with them, and `current_key` lets a program accept them from a user.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from ddpm_tf.checks import check_choice
from ddpm_tf.errors import InputError
from ddpm_tf.optimizers import LR_DECAYS
from ddpm_tf.recipe import build_diffusion
from ddpm_tf.sampling.spec import SamplingSpec

__all__ = [
    "DEFAULTS",
    "DISTILL_DEFAULTS",
    "MAY_CHANGE",
    "OLD_KEYS",
    "ConfigError",
    "current_key",
    "finish",
    "new_config",
    "precision_policy",
    "set_key",
    "upgrade",
    "validate",
]

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
        "num_timesteps": 1000,
        "model_mean_type": "epsilon",
        "model_var_type": "fixed_large",
        "loss_type": "mse",
        "min_snr_gamma": 0.0,  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5
    },
    "train": {
        "steps": 6000,
        "batch_size": 64,
        "learning_rate": 2e-4,
        "warmup_steps": 500,
        "decay": "constant",  # of the learning rate: constant | cosine | linear, to 0 at steps
        "ema_decay": 0.999,
        "grad_clip_norm": 1.0,  # 0: no clipping
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
        "num_samples": 64,  # images in each sample grid (0: no grids)
        "fid_samples": 0,  # samples scored by FID at each evaluation (0: off; needs classifier)
        "classifier": "",  # a .keras classifier from ddpm-classifier, for fid_samples
    },
    # How the sample grids of a run are drawn: the fields of ddpm_tf.SamplingSpec.
    "sampling": SamplingSpec(method="ddim", steps=100).to_dict(),
}

# The section a distillation run adds (`ddpm-distill`): the `DistillationModel` arguments of
# `ddpm_tf.distillation`. teacher_steps 0: the default of `default_teacher_steps`.
DISTILL_DEFAULTS: dict[str, Any] = {
    "teacher": "",  # the teacher's run directory
    "student_steps": 4,  # the student's sampling steps (network calls)
    "teacher_steps": 0,  # the trained model's DDIM steps that the first round distils
    "round_steps": 1000,  # training steps of each halving, or a list: each one's in turn
    "loss_weighting": "landing",  # or "truncated_snr", "uniform" (DistillationModel)
    "method": "progressive",  # or "consistency" (DistillationModel)
}

# Keys a run may change when it is resumed: its length, its bookkeeping and how grids are sampled.
MAY_CHANGE = ("train.steps", "run", "sampling")

# The keys' names before they took their constructor arguments' -> their names now. Saved configs
# (a run's config.json) are read through it by `upgrade`; a program takes them from users with
# `current_key`.
OLD_KEYS: dict[str, str] = {
    "diffusion.timesteps": "diffusion.num_timesteps",
    "diffusion.mean_type": "diffusion.model_mean_type",
    "diffusion.var_type": "diffusion.model_var_type",
    "train.lr": "train.learning_rate",
    "train.warmup": "train.warmup_steps",
    "train.lr_decay": "train.decay",
    "train.grad_clip": "train.grad_clip_norm",
}

# The lower bounds of integer keys (the library would raise later, after the data is read).
_AT_LEAST = {
    "train.steps": 1,
    "train.batch_size": 1,
    "train.warmup_steps": 0,
    "run.checkpoint_every": 1,
    "run.keep": 1,
    "run.log_every": 1,
    "run.sample_every": 1,
    "run.eval_every": 1,
    "run.bpd_examples": 0,
    "run.num_samples": 0,
}

# train.mixed_precision -> the Keras dtype policy of the network. The diffusion mathematics, the
# losses, the EMA and the network's output head stay float32 under every policy.
PRECISION_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


class ConfigError(InputError):
    """A preset, a file or an override is not valid."""


def current_key(key: str) -> str:
    """The name of `key` now: itself, or its new name if it is one of `OLD_KEYS`."""
    return OLD_KEYS.get(key, key)


def upgrade(config: dict) -> dict:
    """A copy of a saved nested config with every key of `OLD_KEYS` under its new name."""
    upgraded = copy.deepcopy(config)
    for old, new in OLD_KEYS.items():
        (section, old_name), (_, new_name) = old.split("."), new.split(".")
        values = upgraded.get(section)
        if isinstance(values, dict) and old_name in values:
            values.setdefault(new_name, values.pop(old_name))
    return upgraded


def new_config() -> dict:
    """A fresh copy of `DEFAULTS`, to fill with `set_key` and complete with `finish`."""
    return copy.deepcopy(DEFAULTS)


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


def set_key(config: dict, key: str, value: Any) -> None:
    """Sets the dotted `key` (a current name) of `config` to `value`, checked against its type."""
    section, _, name = key.partition(".")
    if section not in config or not name:
        raise ConfigError(
            f"unknown config key {key!r}: keys are section.name with sections {sorted(config)}."
        )
    if name not in config[section]:
        close = difflib.get_close_matches(name, config[section], n=3)
        hint = f" Did you mean {[f'{section}.{c}' for c in close]}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}.{hint}")
    if section == "sampling" or key in ("train.mixed_precision", "distill.round_steps"):
        # Checked as a whole: in `validate`, [sampling] by SamplingSpec and the precision (a bool
        # or a dtype name) by `precision_policy`; a distillation's rounds (a number or a list)
        # by its `Halving` (ddpm-distill).
        config[section][name] = value
    else:
        defaults = DISTILL_DEFAULTS if section == "distill" else DEFAULTS[section]
        config[section][name] = _check_type(key, defaults[name], value)


def finish(config: dict, dataset_given: bool) -> dict:
    """Completes a config filled by `set_key` (its data source chosen) and validates it.

    `dataset_given`: whether the user set data.dataset (a preset or an override), which a folder
    of images (data.images) may not be combined with.
    """
    _choose_data_source(config["data"], dataset_given)
    validate(config)
    return config


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
    """Range checks the library would otherwise raise later, after data loading; each names its key."""
    train, run = config["train"], config["run"]
    precision_policy(train["mixed_precision"])
    for key, bound in _AT_LEAST.items():
        section, name = key.split(".")
        if config[section][name] < bound:
            raise ConfigError(f"{key} must be >= {bound}, got {config[section][name]}.")
    if run["fid_samples"] < 0 or run["fid_samples"] == 1:
        raise ConfigError(f"run.fid_samples must be 0 (off) or >= 2, got {run['fid_samples']}.")
    if run["fid_samples"] and not run["classifier"]:  # the file is checked when the run starts
        raise ConfigError(
            f"run.fid_samples={run['fid_samples']} scores samples with a classifier: train one "
            "with `ddpm-classifier --dataset NAME --out PATH.keras` and set run.classifier=PATH.keras."
        )
    _validate_schedule(train)
    try:
        SamplingSpec.from_dict(config["sampling"])
    except ValueError as err:
        raise ConfigError(f"[sampling] {err}") from None
    try:  # NumPy only: no TensorFlow op may run before a multi-worker strategy exists
        build_diffusion(config["diffusion"])
    except ValueError as err:  # its arguments are the keys of [diffusion]
        raise ConfigError(f"[diffusion] {err}") from None


def _validate_schedule(train: dict) -> None:
    """The learning-rate schedule's checks (`WarmupSchedule`'s), in the keys of [train]."""
    if train["learning_rate"] <= 0:
        raise ConfigError(f"train.learning_rate must be > 0, got {train['learning_rate']}.")
    try:
        decay = check_choice(train["decay"], LR_DECAYS, "train.decay")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    steps, warmup = train["steps"], train["warmup_steps"]
    if decay != "constant" and steps <= warmup:
        raise ConfigError(
            f"train.decay={decay} needs train.steps ({steps}) > train.warmup_steps ({warmup}): "
            "the decay runs from the end of the warm-up to the last step."
        )
