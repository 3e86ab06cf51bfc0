"""DDIM inversion (Song et al. 2021, sec. 5.4): the probability-flow ODE run from the data to x_T.

DDIM with eta 0 is a first-order solver of the probability-flow ODE, x_t = sqrt(abar_t) x_0(x_s) +
sqrt(1 - abar_t) eps(x_s) for a step s -> t. Run upward, with eps and x_0 of the point the step
leaves, it finds the latent x_T from which deterministic DDIM sampling returns the image: the same
grid of steps down undoes it up to the solver's error, which falls at first order with the number
of steps. The first move treats the image as x_0 itself: x at the lowest grid point is
sqrt(abar_0) x + sqrt(1 - abar_0) eps(x, 0), the inverse of the sampler's last step. The network is
called once per grid point, as in sampling.

`interpolate` decodes spherical interpolations of two images' latents (the latents of Gaussian noise
concentrate on a sphere, where linear mixing would leave it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError
from ddpm_tf.sampling.loop import predictor, run_loop
from ddpm_tf.sampling.spec import SamplingSpec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import DenoiseFn, GaussianDiffusion

__all__ = ["decode", "interpolate", "inversion_spec", "invert", "slerp"]


def inversion_spec(steps=50, **settings) -> SamplingSpec:
    """The spec of inversion and decoding: DDIM with eta 0 and no clipping (a clipped x_0 would
    make the map non-invertible), `steps` spaced as DDIM's."""
    return SamplingSpec("ddim", steps, eta=0.0, clip_denoised=False, **settings)


def invert(
    diffusion: GaussianDiffusion, denoise_fn: DenoiseFn, images, spec: SamplingSpec | None = None
) -> tf.Tensor:
    """The latents x_T [B, H, W, C] of `images` [B, H, W, C] in [-1, 1] under `spec`'s grid
    (default `inversion_spec()`); `decode` with the same spec maps them back."""
    spec = _deterministic(spec)
    images = diffusion._images(images, "images")
    process = diffusion.with_steps(spec.steps)
    predict = predictor(process, denoise_fn, spec)
    size = process.num_timesteps

    def run(images):
        zero = tf.zeros(tf.shape(images)[:1], tf.int32)
        out = predict(images, zero)  # the network at (image, 0): its eps
        eps = process.predict_eps_from_xstart(images, zero, out["pred_xstart"])
        x = process._q_sample(images, zero, eps)  # to grid point 0 with the image as x_0

        def body(t, x):
            ts = tf.fill(tf.shape(x)[:1], t)
            x0 = predict(x, ts)["pred_xstart"]
            eps = process.predict_eps_from_xstart(x, ts, x0)
            return t + 1, process._q_sample(x0, ts + 1, eps)  # to grid point t + 1

        _, x = tf.while_loop(lambda t, _: t < size - 1, body, (tf.constant(0), x))
        return x

    return tf.function(run, jit_compile=spec.jit_compile, autograph=False)(images)


def decode(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    latents,
    spec: SamplingSpec | None = None,
) -> tf.Tensor:
    """Deterministic DDIM sampling from `latents` [B, H, W, C] (default `inversion_spec()`)."""
    spec = _deterministic(spec)
    latents = diffusion._images(latents, "latents")
    return run_loop(diffusion, denoise_fn, tuple(latents.shape), 0, spec, noise=latents)["sample"]


def slerp(a, b, weights) -> tf.Tensor:
    """Spherical interpolation between a and b [B, ...] at each weight in [0, 1]: [K, B, ...].

    Per image, over its flattened pixels: sin((1 - w) theta) / sin(theta) a + sin(w theta) /
    sin(theta) b with theta the angle between them (linear where they are parallel)."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    w = tf.reshape(tf.cast(weights, a.dtype), [-1] + [1] * len(a.shape))
    axes = list(range(1, len(a.shape)))

    def dot(u, v):
        return tf.reduce_sum(u * v, axis=axes, keepdims=True)

    cosine = tf.clip_by_value(dot(a, b) / tf.sqrt(dot(a, a) * dot(b, b)), -1.0, 1.0)
    theta = tf.acos(cosine)
    small = theta < 1e-6
    sin = tf.where(small, tf.ones_like(theta), tf.sin(theta))
    wa = tf.where(small, 1.0 - w, tf.sin((1.0 - w) * theta) / sin)
    wb = tf.where(small, w, tf.sin(w * theta) / sin)
    return wa * a + wb * b


def interpolate(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    a,
    b,
    frames: int,
    spec: SamplingSpec | None = None,
) -> tf.Tensor:
    """`frames` images [frames, B, H, W, C] from a to b [B, H, W, C]: their latents, spherically
    interpolated at evenly spaced weights 0 .. 1, decoded; the ends are the reconstructions."""
    frames = check_int(frames, "frames", 2)
    a, b = diffusion._images(a, "a"), diffusion._images(b, "b")
    if a.shape != b.shape:
        raise InputError(f"`a` {a.shape} and `b` {b.shape} must have one shape.")
    latents = invert(diffusion, denoise_fn, tf.concat([a, b], 0), spec)
    batch = a.shape[0]
    mixed = slerp(latents[:batch], latents[batch:], np.linspace(0.0, 1.0, frames))
    decoded = decode(diffusion, denoise_fn, tf.reshape(mixed, (-1, *a.shape[1:])), spec)
    return tf.reshape(decoded, (frames, *a.shape))


def _deterministic(spec: SamplingSpec | None) -> SamplingSpec:
    spec = spec if spec is not None else inversion_spec()
    if spec.method != "ddim" or spec.eta != 0:
        raise InputError(
            f"inversion runs deterministic DDIM (method 'ddim', eta 0), got {spec.method!r} with "
            f"eta {spec.eta:g}; make the spec with ddpm_tf.editing.inversion_spec(steps)."
        )
    return spec
