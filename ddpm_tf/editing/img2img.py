"""Image-to-image (SDEdit, Meng et al. 2022): noise an image part of the way, sample back from there.

Each image x is noised to the level t_s = strength * T with q(x_t | x_0) and the chosen method runs
from there to the data, its steps counted over the remaining part [0, t_s] of the process (so
`steps=20` is 20 network calls at any strength). Strength 0 returns the input; 1 noises to the top
of the process, which is ordinary sampling started from the input's trace. A deterministic method
(DDIM with eta 0, DPM-Solver++, UniPC) maps the noised image by the probability-flow ODE; the
ancestral sampler draws from p(x_0 | x_t). The noise is the loop's x_T noise of the seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_float
from ddpm_tf.sampling.loop import build_loop, noise_sources
from ddpm_tf.sampling.spec import SamplingSpec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import DenoiseFn, GaussianDiffusion

__all__ = ["img2img", "img2img_graph", "remaining_process"]


def remaining_process(diffusion: GaussianDiffusion, strength: float, spec: SamplingSpec):
    """The process from the data up to strength * T, respaced to the spec's steps over that part:
    its top index is where sampling starts (float64 tables like the diffusion's)."""
    top = max(1, math.ceil(strength * diffusion.num_timesteps))  # steps 0 .. top - 1 remain
    return diffusion.respace(range(top)).with_steps(spec.steps)


def img2img_graph(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    images: tf.Tensor,
    strength: float,
    seed: tf.Tensor,
    spec: SamplingSpec,
) -> tf.Tensor:
    """SDEdit as graph-building code inside a caller's `tf.function`: `images` [B, H, W, C] (the
    batch may be unknown), `strength` in (0, 1] fixed at trace time, `seed` int32 [2]."""
    process = remaining_process(diffusion, strength, spec)
    top = tf.fill(tf.shape(images)[:1], process.num_timesteps - 1)
    noise = noise_sources(seed, spec.noise_source, process.dtype)[0](tf.shape(images))
    noised = process._q_sample(tf.cast(images, process.dtype), top, noise)
    # The remaining process is already respaced: its loop visits all its steps, from the top.
    all_steps = spec.replace(steps="all")
    sample = build_loop(process, denoise_fn, tf.shape(images), seed, all_steps, noise=noised)
    return tf.ensure_shape(sample["sample"], images.shape)


def img2img(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    images,
    strength: float,
    seed: rng.SeedLike = 0,
    spec: SamplingSpec | None = None,
) -> tf.Tensor:
    """SDEdit of `images` [B, H, W, C] in [-1, 1] at `strength` in [0, 1]; returns [B, H, W, C].

    `spec` (default `SamplingSpec()`) chooses the method and its steps over the remaining part.
    """
    strength = check_float(strength, "strength", 0.0, 1.0)
    spec = spec if spec is not None else SamplingSpec()
    images = diffusion._images(images, "images")
    if strength == 0.0:
        return images

    def run(images, seed):
        return img2img_graph(diffusion, denoise_fn, images, strength, seed, spec)

    compiled = tf.function(run, jit_compile=spec.jit_compile, autograph=False)
    return compiled(images, rng.as_seed(seed))
