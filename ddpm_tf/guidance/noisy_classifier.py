"""`NoisyClassifier`: a classifier of noisy images x_t at diffusion timesteps t, for guidance.

Classifier guidance (Dhariwal & Nichol 2021) steers sampling by the gradient of log p(y | x_t, t),
so the classifier must read images at every noise level of the process. `NoisyClassifier` is the
U-Net's encoder (`ddpm_tf.unet.Encoder`: timestep embedding, down path, middle block) with
GroupNorm, SiLU and attention pooling (`ddpm_tf.layers.AttentionPool`) on top, as
guided-diffusion's classifier. It is called as ``classifier([x_t, t])`` with x_t [B, H, W, C] in
the diffusion's scale and t [B] the original schedule's indices, and returns float32 logits
[B, num_classes]. `PRESETS` size it by image size (`classifier_preset`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from ddpm_tf.errors import InputError
from ddpm_tf.keras_files import load_keras_file
from ddpm_tf.layers import AttentionPool, group_norm
from ddpm_tf.unet import ENCODER_SETTINGS, Encoder

__all__ = [
    "CLASSIFIER_FILE",
    "PRESETS",
    "NoisyClassifier",
    "classifier_preset",
    "load_noisy_classifier",
]

PRESETS: dict[int, dict[str, Any]] = {
    8: {
        "ch": 32,
        "ch_mult": (1, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (4,),
        "num_groups": 8,
    },
    28: {
        "ch": 32,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (7,),
        "num_groups": 8,
    },
    32: {"ch": 64, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 2, "attn_resolutions": (16, 8)},
    64: {"ch": 64, "ch_mult": (1, 2, 3, 4), "num_res_blocks": 2, "attn_resolutions": (16, 8)},
}
"""Classifier sizes by image size (the side in pixels); every other image size needs its own."""


def classifier_preset(image_size: int) -> dict[str, Any]:
    """The `PRESETS` entry for square images of side `image_size`, or an InputError."""
    if image_size not in PRESETS:
        raise InputError(
            f"no noisy-classifier preset for {image_size}x{image_size} images (presets: "
            f"{sorted(PRESETS)}); build a NoisyClassifier with its sizes given."
        )
    return dict(PRESETS[image_size])


@keras.saving.register_keras_serializable(package="ddpm_tf")
class NoisyClassifier(Encoder, keras.Model):
    """Timestep-conditioned image classifier: ``classifier([x_t, t])`` -> logits [B, num_classes].

    Args:
        image_size, in_channels: the (square) images it reads, [B, image_size, image_size,
            in_channels].
        num_classes: classes of the logits (>= 2).
        ch, ch_mult, num_res_blocks, attn_resolutions, dropout, num_heads,
        use_scale_shift_norm, num_groups, resamp_with_conv: the encoder's, as `ddpm_tf.UNet`.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16, 8),
        dropout: float = 0.0,
        num_heads: int = 1,
        use_scale_shift_norm: bool = True,
        num_groups: int = 32,
        resamp_with_conv: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        encoder = {k: v for k, v in locals().items() if k in ENCODER_SETTINGS}
        self._configure(encoder, num_classes, "NoisyClassifier")
        if num_classes < 2:
            raise InputError(f"NoisyClassifier: `num_classes` must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self._make_encoder(None)
        self.norm_out = group_norm(num_groups, self.dtype_policy, "norm_out")
        self.pool = AttentionPool(num_classes, num_heads, dtype=self.dtype_policy, name="pool")
        self.build()

    def build(self, input_shape: Any = None) -> None:
        """Creates all weights (the config fixes every shape; `input_shape` is unused)."""
        if self.built:
            return
        shape, _ = self._encode(self._build_encoder(), self._build_layer)
        self.norm_out.build(shape)
        self.pool.build(shape)
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Logits [B, num_classes] (float32) for ``[x_t, t]``."""
        if not isinstance(inputs, list | tuple) or len(inputs) != 2:
            raise InputError("NoisyClassifier: call it with a list [x_t, t].")
        x, t = inputs
        size, channels = self.image_size, self.in_channels
        if len(x.shape) != 4 or tuple(x.shape[1:]) != (size, size, channels):
            raise InputError(
                f"NoisyClassifier: `x_t` must have shape [batch, {size}, {size}, {channels}], "
                f"got {tuple(x.shape)}."
            )
        h, _ = self._encode(self.conv_in(x), self._applier(self.embed(t), training))
        return self.pool(self.norm_out(h, silu=True))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._encoder_config(), "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoisyClassifier:
        return cls(**config)

    @classmethod
    def for_images(
        cls, image_shape: Sequence[int], num_classes: int, **overrides: Any
    ) -> NoisyClassifier:
        """The preset classifier for images (H, W, C) with H == W (`classifier_preset`)."""
        height, width, channels = image_shape
        if height != width:
            raise InputError(f"NoisyClassifier takes square images, got {height}x{width}.")
        return cls(height, channels, num_classes, **{**classifier_preset(height), **overrides})


CLASSIFIER_FILE = "classifier.keras"
"""The classifier that `ddpm-classifier --noisy` writes into its run directory when it finishes."""


def load_noisy_classifier(path: str | os.PathLike) -> NoisyClassifier:
    """A `NoisyClassifier` from a `.keras` file or from the run directory of
    `ddpm-classifier --noisy` (its finished classifier.keras)."""
    path = Path(path)
    fix = "pass the directory or .keras file that ddpm-classifier --noisy RUN_DIR wrote."
    if path.is_dir():
        if not (path / CLASSIFIER_FILE).is_file():
            raise FileNotFoundError(
                f"{path} holds no {CLASSIFIER_FILE}: ddpm-classifier --noisy writes it when it "
                "finishes (rerun it to resume); " + fix
            )
        path = path / CLASSIFIER_FILE
    classifier = load_keras_file(path, "noisy classifier", fix)
    if not isinstance(classifier, NoisyClassifier):
        raise InputError(
            f"{path} holds a {type(classifier).__name__}, not a NoisyClassifier; {fix}"
        )
    return classifier
