"""`Sampler`: compiled samplers over a Keras network, with guidance, fixed signatures, per-replica
and batched uint8 generation.

`Sampler` wraps a network, a `GaussianDiffusion` and a `SamplingSpec` in `tf.function`s with fixed
input signatures: one graph serves any number of samples, any seed, any labels and guidance scale.
That is what `DiffusionModel.generate` calls and what the exporters save.

Classifier-free guidance (Ho & Salimans) mixes the conditional and unconditional outputs as
out = out_null + s (out_cond - out_null): s = 1 is plain conditional sampling, s > 1 trades diversity
for fidelity. Both outputs come from one network call on a doubled batch; at s = 1 the eager entry
points (`Sampler.__call__`, `DiffusionModel.generate`) call the network on the conditional half
alone. With a learned variance only the mean part is guided; the variance comes from the
conditional output.

Classifier guidance (`ddpm_tf.guidance`) takes a separate classifier of noisy images: a `Sampler`
built with one also has `sample_guided(labels, seed, guidance_scale, classifier_scale)`, which
steers every step toward `labels` by classifier_scale times the classifier's gradient, on top of
classifier-free guidance for a class-conditional network (guidance_scale 0: its null class, so the
classifier alone steers; an unconditional network ignores guidance_scale), and
`sample_classifier_guided(labels, network_labels, seed, classifier_scale)`, the same with the
network called once per image on `network_labels` (plain conditional, or the null class).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_float, check_int
from ddpm_tf.errors import InputError
from ddpm_tf.guidance.classifier_guidance import Classifier, ClassifierGuidance
from ddpm_tf.pixels import unit_to_uint8
from ddpm_tf.sampling.loop import NO_HOOKS, Hooks, build_loop
from ddpm_tf.sampling.spec import SamplingSpec, resolve_spec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import GaussianDiffusion


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
        raise InputError(
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


class Sampler(tf.Module):
    """A network and a diffusion as fixed-signature sampling functions for one `SamplingSpec`.

    `sample(num_samples, seed)` for unconditional networks and `sample_conditional(labels, seed,
    guidance_scale)` for class-conditional ones return float32 images [N, H, W, C] in [-1, 1]; one
    graph serves any number of samples, any seed, labels and guidance scale. `sample_labels(labels,
    seed)` is plain conditional sampling (scale 1) at half the cost: one network call on N images
    per step instead of 2N. The spec's `use_ema` is applied by the caller that picks `network`
    (`DiffusionModel.sampler`).
    """

    def __init__(
        self,
        network: keras.Model,
        diffusion: GaussianDiffusion,
        image_shape: tuple[int, int, int],
        spec: SamplingSpec | None = None,
        *,
        classifier: Classifier | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.spec = resolve_spec(spec, {})
        self.network = network
        self.diffusion = diffusion
        self.image_shape = tuple(check_int(s, "image_shape") for s in image_shape)
        self.num_classes = network_num_classes(network)
        seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
        jit = self.spec.jit_compile
        self.sample = tf.function(
            self._sample,
            input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"), seed_spec],
            jit_compile=jit,
        )
        self.sample_conditional = tf.function(
            self._sample_conditional,
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="labels"),
                seed_spec,
                tf.TensorSpec([], tf.float32, name="guidance_scale"),
            ],
            jit_compile=jit,
        )
        self.sample_labels = tf.function(
            self._sample_conditional,  # no scale: the conditional output alone
            input_signature=[tf.TensorSpec([None], tf.int32, name="labels"), seed_spec],
            jit_compile=jit,
        )
        self.classifier = classifier
        self.classifier_classes = None
        if classifier is not None:
            self.classifier_classes = classifier_classes(classifier, self.image_shape)
            labels_spec = tf.TensorSpec([None], tf.int32, name="labels")
            scale_spec = tf.TensorSpec([], tf.float32, name="classifier_scale")
            self.sample_guided = tf.function(
                self._sample_guided,
                input_signature=[
                    labels_spec,
                    seed_spec,
                    tf.TensorSpec([], tf.float32, name="guidance_scale"),
                    scale_spec,
                ],
                jit_compile=jit,
            )
            self.sample_classifier_guided = tf.function(
                self._sample_classifier_guided,
                input_signature=[
                    labels_spec,
                    tf.TensorSpec([None], tf.int32, name="network_labels"),
                    seed_spec,
                    scale_spec,
                ],
                jit_compile=jit,
            )

    @functools.cached_property
    def process(self) -> GaussianDiffusion:
        """The process the sampler runs: the diffusion respaced to the spec's steps."""
        return self.diffusion.with_steps(self.spec.steps)

    def _run(self, denoise_fn, num_samples, seed, hooks: Hooks = NO_HOOKS) -> tf.Tensor:
        shape = tf.concat([[num_samples], tf.constant(self.image_shape, tf.int32)], axis=0)
        out = build_loop(self.diffusion, denoise_fn, shape, seed, self.spec, hooks=hooks)
        return tf.ensure_shape(out["sample"], (None, *self.image_shape))

    def _classifier_hooks(self, labels, classifier_scale) -> Hooks:
        return Hooks(guide=ClassifierGuidance(self.classifier, labels, classifier_scale))

    def _sample_guided(self, labels, seed, guidance_scale, classifier_scale) -> tf.Tensor:
        """Samples for `labels` [N] steered by the classifier, over classifier-free guidance."""
        conditional = None if self.num_classes is None else labels
        denoise = self._denoiser(conditional, guidance_scale)
        hooks = self._classifier_hooks(labels, classifier_scale)
        return self._run(denoise, tf.shape(labels)[0], seed, hooks)

    def _sample_classifier_guided(self, labels, network_labels, seed, classifier_scale):
        """Samples for `labels` [N] steered by the classifier; the network is called once per
        image, on `network_labels` if it is class-conditional."""
        conditional = None if self.num_classes is None else network_labels
        denoise = self._denoiser(conditional)
        hooks = self._classifier_hooks(labels, classifier_scale)
        return self._run(denoise, tf.shape(labels)[0], seed, hooks)

    def _sample(self, num_samples, seed) -> tf.Tensor:
        if self.num_classes is not None:
            labels = tf.fill([num_samples], self.num_classes)  # the null class: unconditional
            return self._run(guided_denoiser(self.network, labels), num_samples, seed)
        return self._run(guided_denoiser(self.network), num_samples, seed)

    def _sample_conditional(self, labels, seed, guidance_scale=None) -> tf.Tensor:
        """Samples for `labels` [N]: guided by `guidance_scale`, or plainly conditional if None."""
        if self.num_classes is None:
            raise InputError("This network is unconditional: call `sample(num_samples, seed)`.")
        return self._run(self._denoiser(labels, guidance_scale), tf.shape(labels)[0], seed)

    def _denoiser(self, labels=None, guidance_scale=None):
        """The network as a denoise_fn: on `labels` (None: unconditional), mixed with its null
        class by `guidance_scale` (None: the conditional output alone)."""
        return guided_denoiser(
            self.network,
            labels,
            None if labels is None else guidance_scale,
            null_label=self.num_classes,
            learns_variance=self.diffusion.learns_variance,
        )

    def __call__(
        self,
        num_samples: int | None,
        seed: rng.SeedLike = 0,
        labels=None,
        guidance_scale: float = 1.0,
        classifier_scale: float | None = None,
    ) -> tf.Tensor:
        """Eager convenience over the compiled functions, with input checks; `classifier_scale`
        (a Sampler built with a classifier) steers toward `labels` by the classifier."""
        seed = rng.as_seed(seed)
        if classifier_scale is not None:
            return self._call_classifier_guided(
                num_samples, seed, labels, guidance_scale, classifier_scale
            )
        if labels is None:
            count = check_int(num_samples, "num_samples")
            return self.sample(tf.constant(count, tf.int32), seed)
        labels = check_labels(labels, self.num_classes, allow_null=True)
        if num_samples is not None and check_int(num_samples, "num_samples") != labels.shape[0]:
            raise InputError(f"num_samples={num_samples} but {labels.shape[0]} labels were given.")
        scale = check_float(guidance_scale, "guidance_scale")
        if scale == 1.0:  # the conditional output alone: no null-class half of the batch
            return self.sample_labels(labels, seed)
        return self.sample_conditional(labels, seed, tf.constant(scale, tf.float32))

    def _call_classifier_guided(self, num_samples, seed, labels, guidance_scale, classifier_scale):
        if self.classifier is None:
            raise InputError("classifier_scale was given but this Sampler has no classifier.")
        if labels is None:
            raise InputError(
                "classifier guidance needs `labels` [N]: the classes asked of the classifier."
            )
        labels = check_labels(labels, self.classifier_classes, allow_null=False)
        count = labels.shape[0]
        if num_samples is not None and check_int(num_samples, "num_samples") != count:
            raise InputError(f"num_samples={num_samples} but {count} labels were given.")
        scale = tf.constant(check_float(classifier_scale, "classifier_scale", 0.0), tf.float32)
        guidance = check_float(guidance_scale, "guidance_scale")
        if self.num_classes is None:
            if guidance != 1.0:
                raise InputError(
                    f"guidance_scale={guidance:g} is classifier-free guidance, which an "
                    "unconditional network cannot do: leave it 1."
                )
            return self.sample_classifier_guided(labels, labels, seed, scale)
        check_labels(labels, self.num_classes, allow_null=False)
        if guidance in (0.0, 1.0):  # the null class alone, or the conditional output alone
            network_labels = labels if guidance else tf.fill([count], self.num_classes)
            return self.sample_classifier_guided(labels, network_labels, seed, scale)
        return self.sample_guided(labels, seed, tf.constant(guidance, tf.float32), scale)


def classifier_classes(classifier: Classifier, image_shape: tuple[int, int, int]) -> int:
    """The number of classes K of a noisy-image classifier, from one call on a zero image of
    `image_shape` at t = 0 (which also checks that it reads such images): logits [1, K]."""
    try:
        logits = classifier([tf.zeros((1, *image_shape)), tf.zeros((1,), tf.int32)])
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
        raise InputError(
            f"the classifier cannot read this model's {image_shape} images at a timestep "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); train one on its data "
            "(ddpm-classifier --noisy RUN_DIR)."
        ) from None
    if logits.shape.rank != 2 or logits.shape[0] != 1 or logits.shape[1] < 2:
        raise InputError(
            f"the classifier must return logits [B, K] with K >= 2, got shape {logits.shape}."
        )
    return int(logits.shape[1])


def check_labels(labels, num_classes: int | None, *, allow_null: bool) -> tf.Tensor:
    """Validates class labels [B] against the network's classes (the null class only if allowed)."""
    if num_classes is None:
        raise InputError("`labels` were given but the network is unconditional (num_classes=None).")
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer or labels.shape.rank != 1:
        raise InputError(
            f"`labels` must be integer class indices of shape [B], got {labels.dtype.name} {labels.shape}."
        )
    high = num_classes + 1 if allow_null else num_classes
    values = labels.numpy()
    if values.size and (values.min() < 0 or values.max() >= high):
        raise InputError(
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


def every_class(num_samples: int, num_classes: int | None) -> np.ndarray | None:
    """Labels [N] that sample a class-conditional model's whole distribution, or None.

    Classes 0, 1, ..., K-1, 0, 1, ... in turn: every class equally often (to within one), which is
    the class distribution of balanced test splits (Fashion-MNIST, CIFAR-10). None for an
    unconditional model (`num_classes` None).
    """
    if num_classes is None:
        return None
    return np.arange(check_int(num_samples, "num_samples", 0), dtype=np.int32) % num_classes


def generate_uint8(
    model: Any,
    num_samples: int,
    seed: rng.SeedLike = 0,
    spec: SamplingSpec | None = None,
    *,
    labels: np.ndarray | None = None,
    guidance_scale: float = 1.0,
    classifier: Classifier | None = None,
    classifier_scale: float = 1.0,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """`num_samples` images of a `DiffusionModel` as uint8 [N, H, W, C], in batches.

    Batch i is drawn from the seed `rng.fold_in(seed, i)`, so the images depend on `batch_size`
    but not on the machine; `labels` [N] (class-conditional models, or the classes asked of a
    `classifier` that guides by `classifier_scale`) are split with the batches.
    `progress` is called with the number of images done after each batch.
    """
    num_samples = check_int(num_samples, "num_samples")
    batch_size = check_int(batch_size, "batch_size")
    if labels is not None and len(labels) != num_samples:
        raise InputError(f"labels has {len(labels)} entries for num_samples={num_samples}.")
    base = rng.as_seed(seed)
    chunks = []
    for index, start in enumerate(range(0, num_samples, batch_size)):
        count = min(batch_size, num_samples - start)
        part = None if labels is None else labels[start : start + count]
        images = model.generate(
            count,
            seed=rng.fold_in(base, index),
            labels=part,
            guidance_scale=guidance_scale,
            spec=spec,
            **(
                {}
                if classifier is None
                else {"classifier": classifier, "classifier_scale": classifier_scale}
            ),
        )
        chunks.append(unit_to_uint8(images).numpy())
        if progress is not None:
            progress(start + count)
    return np.concatenate(chunks)
