"""A small CNN image classifier whose penultimate activations serve as features for FID and KID.

``ImageClassifier`` maps images [B, H, W, C] in [-1, 1] (``pixels.scale_to_unit`` of uint8 pixels,
the range the diffusion model works in) to class logits [B, num_classes]; ``features(x)`` gives
the activations of the penultimate layer ``"features"`` [B, feature_dim]. The number of
stride-2 stages adapts to the image size: 8x8 (sklearn digits) -> 1, 28x28 (MNIST) -> 2,
32x32 (CIFAR-10) -> 3. ``train_classifier`` fits it reproducibly from a seed on uint8 arrays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import scale_to_unit

__all__ = ["FEATURE_LAYER", "ImageClassifier", "train_classifier"]

FEATURE_LAYER = "features"
"""Name of the penultimate (feature) layer of an ``ImageClassifier``."""


def num_stages(image_size: int, max_stages: int = 3) -> int:
    """Stride-2 downsamplings: halve while the side is >= 8, at most ``max_stages`` times."""
    stages = 0
    while image_size >= 8 and stages < max_stages:
        image_size = (image_size + 1) // 2
        stages += 1
    return stages


@keras.saving.register_keras_serializable(package="ddpm_tf")
class ImageClassifier(keras.Model):
    """CNN classifier: per stage two 3x3 ReLU convs (the second with stride 2), flattening (which
    keeps where strokes are, unlike global pooling), a ReLU dense layer ``"features"`` and a
    linear logits layer.

    Args:
        image_shape: (H, W, C) of the inputs, C in (1, 3).
        num_classes: number of classes (>= 2); the output is logits [B, num_classes].
        width: channels of the first stage, doubled at each further stage.
        feature_dim: size of the penultimate feature layer.
        dropout: dropout rate applied to the features while training.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
        dropout: float = 0.2,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if len(image_shape) != 3 or image_shape[-1] not in (1, 3):
            raise InputError(
                f"image_shape must be (H, W, C) with C in (1, 3), got {tuple(image_shape)!r}"
            )
        self.image_shape = tuple(check_int(s, "image_shape") for s in image_shape)
        self.num_classes = check_int(num_classes, "num_classes")
        if self.num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {num_classes}")
        self.width = check_int(width, "width")
        self.feature_dim = check_int(feature_dim, "feature_dim")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)

        self.convs = []
        stages = max(1, num_stages(min(self.image_shape[:2])))
        for stage in range(stages):
            filters = self.width * 2**stage
            for strides in (1, 2):
                self.convs.append(
                    keras.layers.Conv2D(
                        filters,
                        3,
                        strides=strides,
                        padding="same",
                        activation="relu",
                        name=f"conv{stage}_{strides}",
                    )
                )
        self.flatten = keras.layers.Flatten(name="flatten")
        self.feature_layer = keras.layers.Dense(
            self.feature_dim, activation="relu", name=FEATURE_LAYER
        )
        self.drop = keras.layers.Dropout(self.dropout, name="dropout")
        self.logits = keras.layers.Dense(self.num_classes, name="logits")
        self.build((None, *self.image_shape))

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.feature_layer.build((None, int(np.prod(shape[1:]))))
        self.logits.build((None, self.feature_dim))
        self.built = True

    def features(self, x: Any, training: bool = False) -> Any:
        """Penultimate activations [B, feature_dim] (ReLU, >= 0) for images [B, H, W, C] in [-1, 1]."""
        for conv in self.convs:
            x = conv(x, training=training)
        return self.feature_layer(self.flatten(x))

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Class logits [B, num_classes] for images [B, H, W, C] in [-1, 1]."""
        h = self.features(x, training=bool(training))
        return self.logits(self.drop(h, training=training))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "feature_dim": self.feature_dim,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageClassifier:
        return cls(**config)


def _check_images_labels(
    images: object, labels: object, num_classes: int, arg: str
) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InputError(
            f"{arg} images must be uint8 [N, H, W, C] with C in (1, 3), got {images.dtype} "
            f"{images.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise InputError(
            f"{arg} labels must be integers of shape [N]={images.shape[:1]}, got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{arg} labels must be in [0, num_classes={num_classes}), got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    if images.shape[0] == 0:
        raise InputError(f"{arg} has no examples")
    return images, labels.astype(np.int32)


def train_classifier(
    images_uint8: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    learning_rate: float = 1e-3,
    width: int = 32,
    feature_dim: int = 128,
    verbose: int = 0,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Trains an ``ImageClassifier`` with Adam on cross-entropy, reproducibly from ``seed``.

    Args:
        images_uint8: training images, uint8 [N, H, W, C] (scaled to [-1, 1] inside).
        labels: integer class labels [N] in [0, num_classes).
        num_classes: number of classes.
        epochs, batch_size: passes over the data and examples per step.
        seed: seeds the initialisation, shuffling and dropout (``keras.utils.set_random_seed``,
            which also reseeds Python's and NumPy's global generators).
        val: optional held-out ``(images_uint8, labels)``, e.g. the test split, evaluated at the end.
        learning_rate: Adam step size.
        width, feature_dim: passed to ``ImageClassifier``.
        verbose: Keras ``fit`` verbosity.

    Returns:
        The trained model and a JSON-serializable dict: train_accuracy, train_loss (final
        epoch, with dropout), val_accuracy and val_loss (if ``val``), num_train, num_val,
        epochs, seconds.
    """
    num_classes = check_int(num_classes, "num_classes")
    x, y = _check_images_labels(images_uint8, labels, num_classes, "training")
    if val is not None:
        if not isinstance(val, tuple | list) or len(val) != 2:
            raise InputError(f"val must be a pair (images_uint8, labels), got {type(val).__name__}")
        val_x, val_y = _check_images_labels(val[0], val[1], num_classes, "val")
        if val_x.shape[1:] != x.shape[1:]:
            raise InputError(
                f"val images have shape {val_x.shape[1:]} but training images {x.shape[1:]}"
            )
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an int, got {seed!r}")

    keras.utils.set_random_seed(seed)
    model = ImageClassifier(
        x.shape[1:], num_classes, width=width, feature_dim=feature_dim, name="image_classifier"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    start = time.perf_counter()
    history = model.fit(
        scale_to_unit(x).numpy(),
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=verbose,
    )
    metrics: dict[str, Any] = {
        "train_accuracy": float(history.history["accuracy"][-1]),
        "train_loss": float(history.history["loss"][-1]),
        "num_train": int(x.shape[0]),
        "epochs": epochs,
    }
    if val is not None:
        result = model.evaluate(
            scale_to_unit(val_x).numpy(), val_y, batch_size=batch_size, verbose=0, return_dict=True
        )
        metrics.update(
            val_accuracy=float(result["accuracy"]),
            val_loss=float(result["loss"]),
            num_val=int(val_x.shape[0]),
        )
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    return model, metrics
