"""The exported computations as tf.functions with fixed signatures, and their in-memory references.

Every exported sampler draws its noise with the portable generator (`rng.portable_normal`), so the
SavedModel, TFLite and ONNX artifacts and a `Sampler` whose spec has noise_source="portable" give
the same images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ddpm_tf import kernels, rng
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import unit_to_uint8
from ddpm_tf.sampling import Sampler, call_network

Feeds = dict[str, np.ndarray]


@dataclasses.dataclass
class ExportedFunction:
    """A tf.function to export, its input signature, and fixed inputs to verify it on."""

    name: str
    fn: Callable
    signature: list[tf.TensorSpec]
    feeds: Feeds

    def reference(self) -> dict[str, np.ndarray]:
        """The outputs of the function itself, in TensorFlow, on the verification inputs."""
        out = self.fn(**{k: tf.constant(v) for k, v in self.feeds.items()})
        return {k: v.numpy() for k, v in out.items()}


def _exported(
    name: str, fn: Callable, signature: list[tf.TensorSpec], feeds: Feeds
) -> ExportedFunction:
    """`fn` as a tf.function whose graph holds standard TensorFlow ops only: it is traced under
    `kernels.reference_only()`, since TF Serving, TFLite and ONNX runtimes know nothing of this
    package's fused kernels."""

    @functools.wraps(fn)
    def standard_ops(*args):
        with kernels.reference_only():
            return fn(*args)

    return ExportedFunction(
        name, tf.function(standard_ops, input_signature=signature), signature, feeds
    )


def _image_spec(batch: int | None, image_shape) -> tf.TensorSpec:
    return tf.TensorSpec([batch, *image_shape], tf.float32, name="x_t")


def sampler_function(
    sampler: Sampler, num_samples: int | None, feed_samples: int, guidance_scale: float, seed
) -> ExportedFunction:
    """sample(...) -> {"images": uint8 [N, H, W, C]} over `sampler` (which must use portable noise).

    Unconditional: sample(num_samples, seed), or sample(seed) with `num_samples` fixed. Conditional:
    sample(labels [N], seed, guidance_scale); with `num_samples` fixed, labels have N entries.
    """
    if sampler.spec.noise_source != "portable":
        raise InputError(
            "Exported samplers need noise_source='portable': no TF random op may be exported."
        )
    seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
    feeds: Feeds = {"seed": np.asarray(seed, np.int32)}
    if sampler.num_classes is None:
        run = sampler.sample.python_function
        if num_samples is None:

            def sample(num_samples, seed):
                return {"images": unit_to_uint8(run(num_samples, seed))}

            signature = [tf.TensorSpec([], tf.int32, name="num_samples"), seed_spec]
            feeds = {"num_samples": np.asarray(feed_samples, np.int32), **feeds}
        else:

            def sample(seed):
                return {"images": unit_to_uint8(run(tf.constant(num_samples, tf.int32), seed))}

            signature = [seed_spec]
    else:
        run = sampler.sample_conditional.python_function

        def sample(labels, seed, guidance_scale):
            return {"images": unit_to_uint8(run(labels, seed, guidance_scale))}

        signature = [
            tf.TensorSpec([num_samples], tf.int32, name="labels"),
            seed_spec,
            tf.TensorSpec([], tf.float32, name="guidance_scale"),
        ]
        feeds = {
            "labels": np.arange(feed_samples, dtype=np.int32) % (sampler.num_classes + 1),
            **feeds,
            "guidance_scale": np.asarray(guidance_scale, np.float32),
        }
    return _exported("sample", sample, signature, feeds)


def denoiser_function(
    sampler: Sampler, batch: int | None, feed_batch: int, seed
) -> ExportedFunction:
    """denoise(x_t, t[, labels]) -> {"output": the network's float32 output} (original timesteps)."""
    network, image_shape = sampler.network, sampler.image_shape
    last_step = int(sampler.process.timestep_map[-1])  # the latest step the sampler visits
    x_t = rng.portable_normal([feed_batch, *image_shape], seed).numpy()
    t = np.linspace(0, last_step, feed_batch).round().astype(np.int32)
    feeds: Feeds = {"x_t": x_t, "t": t}
    signature = [_image_spec(batch, image_shape), tf.TensorSpec([batch], tf.int32, name="t")]
    if sampler.num_classes is None:

        def denoise(x_t, t):
            return {"output": tf.cast(call_network(network, x_t, t), tf.float32)}

    else:

        def denoise(x_t, t, labels):
            return {"output": tf.cast(call_network(network, x_t, t, labels), tf.float32)}

        signature.append(tf.TensorSpec([batch], tf.int32, name="labels"))
        feeds["labels"] = np.arange(feed_batch, dtype=np.int32) % (sampler.num_classes + 1)
    return _exported("denoise", denoise, signature, feeds)
