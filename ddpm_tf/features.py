"""Feature extractors for FID/KID: images [N, H, W, C] in, float64 features [N, D] out.

Every extractor takes uint8 pixels in [0, 255] or floats in [-1, 1] (the diffusion model's range),
runs in batches and has a ``name`` and a feature size ``dim``:

- :class:`ClassifierFeatures`: the penultimate layer of a classifier trained on the dataset
  (``ddpm-classifier``), for any image size, including 8x8 digits where Inception is meaningless.
- :class:`InceptionFeatures`: the 2048-d average-pool features of Keras' InceptionV3 from a weights
  file the user supplies (nothing is downloaded), the features FID is usually reported on.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf.checks import check_int
from ddpm_tf.classifier import FEATURE_LAYER, ImageClassifier
from ddpm_tf.errors import InputError
from ddpm_tf.keras_files import load_keras_file
from ddpm_tf.pixels import to_unit_range

__all__ = [
    "INCEPTION_SIZE",
    "INCEPTION_WEIGHTS_FILE",
    "ClassifierFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
]

INCEPTION_SIZE = 299
"""Side in pixels the images are resized to for InceptionV3."""

INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    + INCEPTION_WEIGHTS_FILE
)


class FeatureExtractor(abc.ABC):
    """Maps images [N, H, W, C] (uint8, or floats in [-1, 1]) to float64 features [N, dim].

    Subclasses set ``name``, ``dim``, ``batch_size`` and ``image_shape`` (the (H, W, C) they
    accept, or None for any) and implement :meth:`_extract` on float32 batches in [-1, 1].
    """

    name: str
    dim: int
    batch_size: int
    image_shape: tuple[int, int, int] | None = None

    def __call__(self, images: object) -> np.ndarray:
        x = to_unit_range(images)
        shape = tuple(x.shape[1:])
        if self.image_shape is not None and shape != tuple(self.image_shape):
            raise InputError(
                f"images have shape [N, {', '.join(map(str, shape))}] but {self.name!r} takes "
                f"[N, {', '.join(map(str, self.image_shape))}]; use a classifier trained on "
                "this dataset"
            )
        parts = [
            self._extract(tf.constant(x[start : start + self.batch_size])).numpy()
            for start in range(0, x.shape[0], self.batch_size)
        ]
        return np.concatenate(parts).astype(np.float64)

    @abc.abstractmethod
    def _extract(self, batch: tf.Tensor) -> tf.Tensor:
        """Features [B, dim] of a float32 batch [B, H, W, C] in [-1, 1]."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class ClassifierFeatures(FeatureExtractor):
    """Penultimate-layer activations of a classifier trained on the dataset.

    Args:
        model: a path to a ``.keras`` file written by ``ddpm-classifier``, an ``ImageClassifier``,
            or any functional Keras model with one image input [B, H, W, C] in [-1, 1] and a
            layer named ``"features"``.
        batch_size: images per forward pass.
    """

    def __init__(self, model: str | os.PathLike | keras.Model, batch_size: int = 256):
        self.batch_size = check_int(batch_size, "batch_size")
        if isinstance(model, str | os.PathLike):
            path = Path(model)
            fix = "train one with `ddpm-classifier --dataset NAME --out PATH.keras`"
            model = load_keras_file(path, "classifier model", fix)
            self.name = f"classifier:{path.name}"
        else:
            self.name = f"classifier:{getattr(model, 'name', type(model).__name__)}"
        if isinstance(model, ImageClassifier):
            self.image_shape = model.image_shape
            self.dim = model.feature_dim
            forward = model.features
        else:
            forward = self._functional_features(model)
            shape = tuple(model.inputs[0].shape[1:])
            self.image_shape = None if None in shape else tuple(int(s) for s in shape)
            self.dim = int(forward.outputs[0].shape[-1])
        self.model = model
        self._forward = tf.function(lambda x: forward(x, training=False), reduce_retracing=True)

    @staticmethod
    def _functional_features(model: object) -> keras.Model:
        names = [layer.name for layer in getattr(model, "layers", [])]
        if not isinstance(model, keras.Model) or FEATURE_LAYER not in names:
            raise InputError(
                f"model must be an ImageClassifier or a functional Keras model with a layer named "
                f"{FEATURE_LAYER!r}; got {type(model).__name__} with layers {names}"
            )
        try:
            inputs = model.inputs
        except AttributeError:
            inputs = None
        if not inputs or len(inputs) != 1:
            raise InputError(f"model must be functional with one image input, got {model.name!r}")
        return keras.Model(inputs, model.get_layer(FEATURE_LAYER).output)

    def _extract(self, batch: tf.Tensor) -> tf.Tensor:
        return self._forward(batch)


class InceptionFeatures(FeatureExtractor):
    """InceptionV3 average-pool features [N, 2048] from a user-supplied weights file.

    Images are resized bilinearly to 299x299 (from [0, 255] pixels), grayscale is repeated to
    three channels, and pixels are scaled by ``keras.applications.inception_v3.preprocess_input``
    (to [-1, 1]). Nothing is downloaded: pass the path of the Keras ImageNet weights without the
    top, ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`` (or a ``.weights.h5`` file
    saved from ``InceptionV3(include_top=False)``).

    Args:
        weights_path: path to the weights file.
        batch_size: images per forward pass.
    """

    def __init__(self, weights_path: str | os.PathLike, batch_size: int = 32):
        self.batch_size = check_int(batch_size, "batch_size")
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights_path={str(path)!r}: no such file. InceptionV3 weights are never "
                f"downloaded here; fetch {INCEPTION_WEIGHTS_FILE} on a machine with network access "
                f"({INCEPTION_WEIGHTS_URL}, or from ~/.keras/models/ after "
                "keras.applications.InceptionV3(include_top=False) has run there) and pass its path"
            )
        if not path.name.endswith((".h5", ".hdf5")):
            raise InputError(
                f"weights_path={str(path)!r} must be a Keras .h5 or .weights.h5 weights file "
                f"such as {INCEPTION_WEIGHTS_FILE}"
            )
        try:
            self.model = keras.applications.InceptionV3(
                include_top=False,
                pooling="avg",
                weights=str(path),
                input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
            )
        except (ValueError, OSError, KeyError) as err:
            raise InputError(
                f"weights_path={str(path)!r} could not be loaded into "
                f"InceptionV3(include_top=False); expected {INCEPTION_WEIGHTS_FILE}: {err}"
            ) from err
        self.name = "inception_v3"
        self.dim = int(self.model.outputs[0].shape[-1])
        self._forward = tf.function(
            lambda x: self.model(self.preprocess(x), training=False), reduce_retracing=True
        )

    @staticmethod
    def preprocess(batch: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C] in [-1, 1] -> InceptionV3 input [B, 299, 299, 3] in [-1, 1]."""
        pixels = (tf.convert_to_tensor(batch, tf.float32) + 1.0) * 127.5
        pixels = tf.image.resize(pixels, (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear")
        if pixels.shape[-1] == 1:
            pixels = tf.repeat(pixels, 3, axis=-1)
        return keras.applications.inception_v3.preprocess_input(pixels)

    def _extract(self, batch: tf.Tensor) -> tf.Tensor:
        return self._forward(batch)
