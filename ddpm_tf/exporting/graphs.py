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

from ddpm_tf import editing, kernels, rng
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import scale_to_unit, unit_to_uint8
from ddpm_tf.sampling import Sampler, call_network, guided_denoiser

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
        out = self.fn(*(tf.constant(self.feeds[spec.name]) for spec in self.signature))
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


def guided_function(
    sampler: Sampler,
    num_samples: int | None,
    feed_samples: int,
    guidance_scale: float,
    classifier_scale: float,
    seed,
) -> ExportedFunction:
    """guided(labels [N], seed[, guidance_scale], classifier_scale) -> {"images": uint8}: the
    sampler steered toward `labels` by its classifier (`Sampler.sample_guided`); a
    class-conditional network also takes the classifier-free guidance scale (0: its null class)."""
    if sampler.classifier is None:
        raise InputError("the guided function needs a Sampler built with a classifier.")
    signature = [tf.TensorSpec([num_samples], tf.int32, name="labels")]
    signature.append(tf.TensorSpec([2], tf.int32, name="seed"))
    feeds: Feeds = {
        "labels": np.arange(feed_samples, dtype=np.int32) % sampler.classifier_classes,
        "seed": np.asarray(seed, np.int32),
    }
    scale = tf.TensorSpec([], tf.float32, name="classifier_scale")
    if sampler.num_classes is None:
        run = sampler.sample_classifier_guided.python_function

        def guided(labels, seed, classifier_scale):
            return {"images": unit_to_uint8(run(labels, labels, seed, classifier_scale))}

    else:
        run = sampler.sample_guided.python_function

        def guided(labels, seed, guidance_scale, classifier_scale):
            return {"images": unit_to_uint8(run(labels, seed, guidance_scale, classifier_scale))}

        signature.append(tf.TensorSpec([], tf.float32, name="guidance_scale"))
        feeds["guidance_scale"] = np.asarray(guidance_scale, np.float32)
    signature.append(scale)
    feeds["classifier_scale"] = np.asarray(classifier_scale, np.float32)
    return _exported("guided", guided, signature, feeds)


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


def _verification_images(feed_batch: int, image_shape, seed) -> np.ndarray:
    """uint8 images [N, H, W, C] to verify the editing functions on: noise at half the pixel
    range, drawn with the portable generator (stream 1, apart from the sampler's x_T)."""
    noise = rng.portable_normal([feed_batch, *image_shape], seed, 1)
    return unit_to_uint8(0.5 * noise).numpy()


def _centre_mask(feed_batch: int, image_shape) -> np.ndarray:
    """float32 [N, H, W, 1], 0 (generate) on the central square of half the side, 1 elsewhere."""
    size = image_shape[0]
    mask = np.ones([feed_batch, size, size, 1], np.float32)
    mask[:, size // 4 : size - size // 4, size // 4 : size - size // 4] = 0.0
    return mask


def _editing_function(
    name: str,
    sampler: Sampler,
    edit: Callable,
    inputs: list[tuple[tf.TensorSpec, np.ndarray]],
    batch: int | None,
    feed_batch: int,
    guidance_scale: float,
    seed,
) -> ExportedFunction:
    """fn(input_images uint8 [N, H, W, C], *inputs, seed[, labels [N], guidance_scale]) ->
    {"images": uint8}: `edit(denoise_fn, input images in [-1, 1], *inputs, seed)` with the
    sampler's network, conditional on the labels (the null class: unconditional) and guided by
    the scale. (The input is not named "images": ONNX wants input and output names apart.)"""
    image_shape, num_classes = sampler.image_shape, sampler.num_classes
    signature = [
        tf.TensorSpec([batch, *image_shape], tf.uint8, name="input_images"),
        *(spec for spec, _ in inputs),
        tf.TensorSpec([2], tf.int32, name="seed"),
    ]
    feeds: Feeds = {
        "input_images": _verification_images(feed_batch, image_shape, seed),
        **{spec.name: value for spec, value in inputs},
        "seed": np.asarray(seed, np.int32),
    }
    if num_classes is not None:
        signature += [
            tf.TensorSpec([batch], tf.int32, name="labels"),
            tf.TensorSpec([], tf.float32, name="guidance_scale"),
        ]
        feeds["labels"] = np.arange(feed_batch, dtype=np.int32) % (num_classes + 1)
        feeds["guidance_scale"] = np.asarray(guidance_scale, np.float32)
    count = 1 + len(inputs) + 1  # images, the inputs, seed

    def run(images, *args):
        conditioning = args[count - 1 :]
        denoise = guided_denoiser(
            sampler.network,
            *conditioning,
            null_label=num_classes,
            learns_variance=sampler.diffusion.learns_variance,
        )
        edited = edit(denoise, scale_to_unit(images), *args[: count - 1])
        return {"images": unit_to_uint8(edited)}

    return _exported(name, run, signature, feeds)


def inpaint_function(
    sampler: Sampler,
    batch: int | None,
    feed_batch: int,
    guidance_scale: float,
    seed,
    path: tuple[int, ...] | None,
) -> ExportedFunction:
    """inpaint(input_images, mask, seed[, labels, guidance_scale]) -> {"images": uint8}: the pixels
    where `mask` (float32 [N, H, W, 1]) is above 0.5 kept, the rest generated by the sampler's
    method along `path` (`editing.inpainting_path`: RePaint's jumps, or None for replacement)."""
    size = sampler.image_shape[0]
    mask = tf.TensorSpec([batch, size, size, 1], tf.float32, name="mask")

    def edit(denoise, images, mask, seed):
        known = tf.cast(mask > 0.5, images.dtype)
        return editing.inpaint_graph(
            sampler.diffusion, denoise, images, known, seed, sampler.spec, path
        )

    feeds = [(mask, _centre_mask(feed_batch, sampler.image_shape))]
    return _editing_function(
        "inpaint", sampler, edit, feeds, batch, feed_batch, guidance_scale, seed
    )


def img2img_function(
    sampler: Sampler,
    batch: int | None,
    feed_batch: int,
    guidance_scale: float,
    seed,
    strength: float,
) -> ExportedFunction:
    """img2img(input_images, seed[, labels, guidance_scale]) -> {"images": uint8}: SDEdit at the
    `strength` fixed at export, the sampler's method over the remaining part of the process."""

    def edit(denoise, images, seed):
        return editing.img2img_graph(
            sampler.diffusion, denoise, images, strength, seed, sampler.spec
        )

    return _editing_function("img2img", sampler, edit, [], batch, feed_batch, guidance_scale, seed)
