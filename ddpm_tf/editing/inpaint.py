"""Inpainting: keep the known pixels, generate the rest consistent with them.

Before each step at index t the known pixels (mask 1) of x_t are replaced by a fresh draw of
q(x_t | x_0 = image), and at the end by the image itself (`Hooks.known` of the sampling loop). With
that alone ("replacement", the rule for every method: DDIM, DPM-Solver++, UniPC) the generated
pixels see the known ones only through the noisy x_t, and their law is biased toward the
unconditional one. RePaint (Lugmayr et al. 2022) repairs it for one-step methods: every `jump`
steps down the process goes `jump` steps back up with q(x_{t+1} | x_t) and down again, `resample`
times in all, so the generated pixels are harmonised with the known ones over and over (costing
about `resample` times the network calls). `resample=1` is plain replacement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError
from ddpm_tf.sampling.loop import Hooks, run_loop
from ddpm_tf.sampling.spec import SamplingSpec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import DenoiseFn, GaussianDiffusion

__all__ = ["check_mask", "inpaint", "repaint_path"]


def repaint_path(num_steps: int, resample: int, jump: int) -> tuple[int, ...]:
    """RePaint's schedule over a process of `num_steps` steps: the indices visited from the top
    down to -1 (the data), going `jump` steps back up at every `jump`-th index, `resample - 1`
    times each (resample 1: straight down)."""
    resample, jump = check_int(resample, "resample"), check_int(jump, "jump")
    if jump >= num_steps and resample > 1:
        raise InputError(f"jump={jump} must be below the {num_steps} sampling steps.")
    remaining = {j: resample - 1 for j in range(0, num_steps - jump, jump)}
    t, path = num_steps - 1, [num_steps - 1]
    while t >= 0:
        t -= 1
        path.append(t)
        if remaining.get(t, 0) > 0:
            remaining[t] -= 1
            for _ in range(jump):
                t += 1
                path.append(t)
    return tuple(path)


def check_mask(mask, images: tf.Tensor) -> tf.Tensor:
    """The mask as a float tensor of the images' dtype, 1 where a pixel is known; it must hold
    only 0 and 1 and broadcast to the images' shape [B, H, W, C] (per image or shared)."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank == 2:  # [H, W]: one mask for every channel
        mask = mask[..., None]
    if mask.dtype == tf.bool:
        mask = tf.cast(mask, images.dtype)
    if not (mask.dtype.is_floating or mask.dtype.is_integer):
        raise InputError(f"`mask` must be 0/1 numbers or booleans, got dtype {mask.dtype.name}.")
    mask = tf.cast(mask, images.dtype)
    try:
        broadcast = tf.broadcast_static_shape(mask.shape, images.shape)
    except ValueError:
        broadcast = None
    if broadcast is None or broadcast != images.shape:
        raise InputError(
            f"`mask` of shape {mask.shape} does not broadcast to the images' {images.shape}: give "
            "[B, H, W, C], [B, H, W, 1], [H, W, 1] or [H, W] (a shared mask) with 1 where known."
        )
    if not bool(tf.reduce_all((mask == 0) | (mask == 1))):
        raise InputError("`mask` must hold only 0 (generate) and 1 (keep).")
    return mask


def inpaint(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    images,
    mask,
    seed: rng.SeedLike = 0,
    spec: SamplingSpec | None = None,
    *,
    resample: int = 1,
    jump: int = 10,
) -> tf.Tensor:
    """`images` [B, H, W, C] in [-1, 1] with the pixels where `mask` is 0 generated: RePaint with
    `resample` rounds of `jump` steps for one-step methods, plain replacement when resample is 1.
    Returns [B, H, W, C], equal to `images` where the mask is 1."""
    spec = spec if spec is not None else SamplingSpec()
    resample, jump = check_int(resample, "resample"), check_int(jump, "jump")
    images = diffusion._images(images, "images")
    mask = check_mask(mask, images)
    num_steps = diffusion.with_steps(spec.steps).num_timesteps
    path = repaint_path(num_steps, resample, jump) if resample > 1 else None
    hooks = Hooks(known=(images, mask), path=path)
    sample = run_loop(diffusion, denoise_fn, tuple(images.shape), seed, spec, hooks=hooks)
    return mask * images + (1.0 - mask) * sample["sample"]
