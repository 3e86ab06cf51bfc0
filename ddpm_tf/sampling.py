"""Compiled samplers over a Keras network: guidance, fixed signatures, and per-replica sampling.

`Sampler` wraps a network and a `GaussianDiffusion` (optionally respaced) in `tf.function`s with fixed
input signatures: one graph serves any number of samples, any seed, any labels and guidance scale.
That is what `DiffusionModel.generate` calls and what the exporters save.

Classifier-free guidance (Ho & Salimans) mixes the conditional and unconditional outputs as
out = out_null + s (out_cond - out_null): s = 1 is plain conditional sampling, s > 1 trades diversity
for fidelity. Both outputs come from one network call on a doubled batch. With a learned variance
only the mean part is guided; the variance comes from the conditional output.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import keras
import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.diffusion import SAMPLERS, GaussianDiffusion
from ddpm_tf.schedules import space_timesteps


def network_num_classes(network: keras.Model) -> int | None:
    """The number of classes a network is conditioned on (its null label is that number), or None."""
    return getattr(network, "num_classes", None)


def call_network(network: Callable, x_t, t, labels=None, training: bool = False) -> tf.Tensor:
    """network([x_t, t]) or network([x_t, t, labels]): the list form serves the UNet and functional models."""
    inputs = [x_t, t] if labels is None else [x_t, t, labels]
    return network(inputs, training=training)


def guided_denoiser(
    network: Callable,
    labels: tf.Tensor | None = None,
    guidance_scale: tf.Tensor | float | None = None,
    *,
    null_label: int | None = None,
    learns_variance: bool = False,
    training: bool = False,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A denoise_fn(x_t, t) over `network`, conditional on `labels` [B], guided when a scale is given."""
    if labels is None:
        return lambda x_t, t: call_network(network, x_t, t, training=training)
    labels = tf.cast(labels, tf.int32)
    if guidance_scale is None:
        return lambda x_t, t: call_network(network, x_t, t, labels, training=training)
    if null_label is None:
        raise ValueError(
            "`null_label` is needed for guidance: the label index of the unconditional class."
        )
    scale = tf.cast(guidance_scale, tf.float32)

    def denoise(x_t, t):
        both = call_network(
            network,
            tf.concat([x_t, x_t], 0),
            tf.concat([t, t], 0),
            tf.concat([labels, tf.fill(tf.shape(labels), null_label)], 0),
            training=training,
        )
        both = tf.cast(both, tf.float32)
        cond, uncond = tf.split(both, 2, axis=0)
        if learns_variance:
            cond_mean, cond_var = tf.split(cond, 2, axis=-1)
            uncond_mean, _ = tf.split(uncond, 2, axis=-1)
            return tf.concat([uncond_mean + scale * (cond_mean - uncond_mean), cond_var], axis=-1)
        return uncond + scale * (cond - uncond)

    return denoise


def parse_steps(steps: int | str | None) -> int | str | None:
    """The respacing of a steps option (a command-line string or an int): None, a count or "ddimN"."""
    if steps is None or isinstance(steps, int) and not isinstance(steps, bool):
        if steps is not None and steps < 1:
            raise ValueError(f"`steps` must be a positive int or 'ddimN', got {steps}.")
        return steps
    text = str(steps).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if re.fullmatch(r"ddim[1-9][0-9]*", text):
        return text
    raise ValueError(
        f"`steps` must be a positive int (e.g. 50) or 'ddimN' (e.g. ddim50), got {steps!r}."
    )


def respaced(diffusion: GaussianDiffusion, num_steps: int | str | None) -> GaussianDiffusion:
    """`diffusion` itself, or the process on `space_timesteps(T, num_steps)` (an int or "ddimN")."""
    if num_steps is None or num_steps == diffusion.num_timesteps:
        return diffusion
    return diffusion.respace(space_timesteps(diffusion.num_timesteps, num_steps))


class Sampler(tf.Module):
    """A network and a diffusion as fixed-signature sampling functions.

    `sample(num_samples, seed)` for unconditional networks and `sample_conditional(labels, seed,
    guidance_scale)` for class-conditional ones return float32 images [N, H, W, C] in [-1, 1].
    `noise` is the noise source: "philox" (TF's stateless RNG) or "portable" (builtin ops only:
    the same noise in the TFLite and ONNX exports, see `rng.portable_normal`).
    """

    def __init__(
        self,
        network: keras.Model,
        diffusion: GaussianDiffusion,
        image_shape: tuple[int, int, int],
        *,
        sampler: str = "ancestral",
        num_steps: int | str | None = None,
        eta: float = 0.0,
        clip_denoised: bool = True,
        jit_compile: bool = False,
        noise: str = "philox",
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.noise = rng.check_noise_source(noise)
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown `sampler` {sampler!r}; choose one of {SAMPLERS}.")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"`eta` must be in [0, 1], got {eta}.")
        self.network = network
        self.diffusion = respaced(diffusion, num_steps)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.sampler = sampler
        self.eta = float(eta)
        self.clip_denoised = bool(clip_denoised)
        self.num_classes = network_num_classes(network)
        seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
        self.sample = tf.function(
            self._sample,
            input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"), seed_spec],
            jit_compile=jit_compile,
        )
        self.sample_conditional = tf.function(
            self._sample_conditional,
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="labels"),
                seed_spec,
                tf.TensorSpec([], tf.float32, name="guidance_scale"),
            ],
            jit_compile=jit_compile,
        )

    def _run(self, denoise_fn, num_samples, seed) -> tf.Tensor:
        shape = tf.concat([[num_samples], tf.constant(self.image_shape, tf.int32)], axis=0)
        out = self.diffusion.sample_loop_graph(
            denoise_fn,
            shape,
            seed,
            sampler=self.sampler,
            eta=self.eta,
            clip_denoised=self.clip_denoised,
            noise_source=self.noise,
        )
        return tf.ensure_shape(out["sample"], (None, *self.image_shape))

    def _sample(self, num_samples, seed) -> tf.Tensor:
        if self.num_classes is not None:
            labels = tf.fill([num_samples], self.num_classes)  # the null class: unconditional
            return self._run(guided_denoiser(self.network, labels), num_samples, seed)
        return self._run(guided_denoiser(self.network), num_samples, seed)

    def _sample_conditional(self, labels, seed, guidance_scale) -> tf.Tensor:
        if self.num_classes is None:
            raise ValueError("This network is unconditional: call `sample(num_samples, seed)`.")
        denoise = guided_denoiser(
            self.network,
            labels,
            guidance_scale,
            null_label=self.num_classes,
            learns_variance=self.diffusion.learns_variance,
        )
        return self._run(denoise, tf.shape(labels)[0], seed)

    def __call__(
        self, num_samples: int, seed: rng.SeedLike = 0, labels=None, guidance_scale: float = 1.0
    ):
        """Eager convenience over the compiled functions, with input checks."""
        seed = rng.as_seed(seed)
        if labels is None:
            if not isinstance(num_samples, int) or num_samples < 1:
                raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")
            return self.sample(tf.constant(num_samples, tf.int32), seed)
        labels = check_labels(labels, self.num_classes, allow_null=True)
        if num_samples is not None and int(num_samples) != int(labels.shape[0]):
            raise ValueError(
                f"`num_samples`={num_samples} but {labels.shape[0]} labels were given."
            )
        return self.sample_conditional(labels, seed, tf.constant(guidance_scale, tf.float32))


def check_labels(labels, num_classes: int | None, *, allow_null: bool) -> tf.Tensor:
    """Validates class labels [B] against the network's classes (the null class only if allowed)."""
    if num_classes is None:
        raise ValueError("`labels` were given but the network is unconditional (num_classes=None).")
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer or labels.shape.rank != 1:
        raise ValueError(
            f"`labels` must be integer class indices of shape [B], got {labels.dtype.name} {labels.shape}."
        )
    high = num_classes + 1 if allow_null else num_classes
    values = labels.numpy()
    if values.size and (values.min() < 0 or values.max() >= high):
        raise ValueError(
            f"`labels` must lie in [0, {high}); got values from {values.min()} to {values.max()}."
        )
    return tf.cast(labels, tf.int32)


def sample_per_replica(
    strategy: tf.distribute.Strategy,
    sampler: Sampler,
    num_samples_per_replica: int,
    seed: rng.SeedLike,
) -> tf.Tensor:
    """Samples on every replica of `strategy` with seeds fold_in(seed, replica id); all images gathered.

    The network must have been built under `strategy.scope()`.
    """
    base = rng.as_seed(seed)
    count = tf.constant(num_samples_per_replica, tf.int32)

    def replica_fn():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return sampler.sample(count, rng.fold_in(base, replica))

    per_replica = strategy.run(replica_fn)
    return strategy.gather(per_replica, axis=0)
