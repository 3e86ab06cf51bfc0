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
from ddpm_tf.sampling.loop import Hooks, build_loop
from ddpm_tf.sampling.registry import method_class
from ddpm_tf.sampling.spec import SamplingSpec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import DenoiseFn, GaussianDiffusion

__all__ = ["check_mask", "inpaint", "inpaint_graph", "inpainting_path", "repaint_path"]


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


def inpaint_graph(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    images: tf.Tensor,
    mask: tf.Tensor,
    seed: tf.Tensor,
    spec: SamplingSpec,
    path: tuple[int, ...] | None,
) -> tf.Tensor:
    """Inpainting as graph-building code inside a caller's `tf.function` (the batch of `images`
    [B, H, W, C] may be unknown; `mask` is 0/1 and broadcasts to them; `seed` is int32 [2];
    `path` is `repaint_path`'s, or None for plain replacement). Returns [B, H, W, C]."""
    hooks = Hooks(known=(images, mask), path=path)
    sample = build_loop(diffusion, denoise_fn, tf.shape(images), seed, spec, hooks=hooks)
    sample = tf.ensure_shape(sample["sample"], images.shape)
    return mask * images + (1.0 - mask) * sample


def inpainting_path(
    process: GaussianDiffusion, spec: SamplingSpec, resample: int, jump: int
) -> tuple[int, ...] | None:
    """The loop's path over `process` (the diffusion respaced to the spec's steps) for
    `resample` rounds of `jump` steps: None (straight down, plain replacement) when resample is
    1. The jumps go back up the process, which only one-step methods can follow."""
    resample, jump = check_int(resample, "resample"), check_int(jump, "jump")
    if resample == 1:
        return None
    if method_class(spec.method)(process, spec).memory:
        raise InputError(
            f"RePaint's resampling (resample={resample}) goes back up the process, which the "
            f"multistep method {spec.method!r} cannot follow: use method 'ancestral' or 'ddim', "
            "or resample=1 (plain replacement)."
        )
    return repaint_path(process.num_timesteps, resample, jump)


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
    images = diffusion._images(images, "images")
    mask = check_mask(mask, images)
    path = inpainting_path(diffusion.with_steps(spec.steps), spec, resample, jump)

    def run(images, mask, seed):
        return inpaint_graph(diffusion, denoise_fn, images, mask, seed, spec, path)

    compiled = tf.function(run, jit_compile=spec.jit_compile, autograph=False)
    return compiled(images, mask, rng.as_seed(seed))
