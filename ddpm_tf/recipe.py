"""Models from a training config: the sections `model`, `diffusion` and `train` to a DiffusionModel.

A config is the nested dict that `ddpm-train` resolves from a TOML preset and its overrides (see
`ddpm_tf.config` for the keys, their defaults and checks) and saves as a run's `config.json`. Its
keys are the names of the arguments they set, so each is passed on by its own name. Building the
model here, in the library, lets any code rebuild the model of a run from that file.
"""

from __future__ import annotations

from typing import Any

from ddpm_tf.diffusion import GaussianDiffusion
from ddpm_tf.distillation import DistillationModel
from ddpm_tf.errors import InputError
from ddpm_tf.model import DiffusionModel
from ddpm_tf.optimizers import FusedAdam, WarmupSchedule
from ddpm_tf.schedules import get_beta_schedule
from ddpm_tf.unet import from_preset

__all__ = ["build_diffusion", "build_model", "build_schedule"]


def build_diffusion(section: dict[str, Any]) -> GaussianDiffusion:
    """The `GaussianDiffusion` of a config's `diffusion` section."""
    return GaussianDiffusion(
        get_beta_schedule(section["schedule"], num_timesteps=section["num_timesteps"]),
        model_mean_type=section["model_mean_type"],
        model_var_type=section["model_var_type"],
        loss_type=section["loss_type"],
        min_snr_gamma=section.get("min_snr_gamma", 0.0),
    )


def build_schedule(section: dict[str, Any], periods: tuple[int, ...] = ()) -> WarmupSchedule:
    """The learning-rate schedule of a config's `train` section: a decay ends at train.steps,
    or, with `periods` (a distillation's rounds), at the end of each period."""
    return WarmupSchedule(
        learning_rate=section["learning_rate"],
        warmup_steps=section["warmup_steps"],
        decay=section.get("decay", "constant"),
        decay_steps=section["steps"],
        periods=periods,
    )


def build_model(
    config: dict[str, Any], image_shape: tuple[int, int, int], num_classes: int | None = None
) -> DiffusionModel:
    """The compiled `DiffusionModel` of `config` for square images of `image_shape` (H, W, C).

    `num_classes` makes the U-Net class-conditional (classifier-free guidance). A config with a
    `distill` section (`ddpm-distill`) builds the `DistillationModel` of its arguments, its
    learning rate restarting each round. Call it under a distribution strategy's scope to build
    the model for that strategy.
    """
    height, width, channels = (int(s) for s in image_shape)
    if height != width:
        raise InputError(f"images must be square, got {tuple(image_shape)}; set data.image_size.")
    overrides = {
        k: tuple(v) if isinstance(v, list) else v  # TOML lists -> the tuples UNet's config holds
        for k, v in config["model"].items()
        if k != "preset" and v is not None
    }
    diffusion = build_diffusion(config["diffusion"])
    network = from_preset(
        config["model"]["preset"],
        image_size=height,
        in_channels=channels,
        learn_sigma=diffusion.learns_variance,
        num_classes=num_classes,
        **overrides,
    )
    train = config["train"]
    settings = dict(
        ema_decay=train["ema_decay"],
        timestep_sampler=train["timestep_sampler"],
        grad_clip_norm=train["grad_clip_norm"] or None,  # 0: no clipping
        label_dropout=train["label_dropout"],
        seed=train["seed"],
    )
    distill = config.get("distill")
    if distill:
        bounds = {k: config["sampling"][k] for k in ("clip_denoised", "dynamic_threshold")}
        model = DistillationModel(network, diffusion, **distill, **bounds, **settings)
        schedule = build_schedule(train, periods=model.halving.lengths)
    else:
        model = DiffusionModel(network, diffusion, **settings)
        schedule = build_schedule(train)
    optimizer = FusedAdam(schedule)
    model.compile(optimizer, jit_compile=train["jit_compile"])
    return model
