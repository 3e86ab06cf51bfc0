"""The DDPM U-Net noise-prediction network (Ho et al. 2020) with Improved DDPM options.

``UNet`` maps a noisy image ``x_t`` ``[B, H, W, C]`` and timesteps ``t`` ``[B]`` (plus class
labels ``y`` ``[B]`` when class-conditional) to ``[B, H, W, C]`` (the predicted noise) or
``[B, H, W, 2C]`` when ``learn_sigma`` (noise and the variance interpolation ``v`` of
Improved DDPM). The output is always float32, also under a mixed-precision policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from ddpm_tf.errors import InputError
from ddpm_tf.layers import (
    AttentionBlock,
    Downsample,
    ResidualBlock,
    TimestepEmbedding,
    Upsample,
    group_norm,
)

PRESETS: dict[str, dict[str, Any]] = {
    "ddpm_cifar10": {
        "image_size": 32,
        "in_channels": 3,
        "ch": 128,
        "ch_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "dropout": 0.1,
        "num_heads": 1,
    },
    "ddpm_256": {
        "image_size": 256,
        "in_channels": 3,
        "ch": 128,
        "ch_mult": (1, 1, 2, 2, 4, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "dropout": 0.0,
        "num_heads": 1,
    },
    "tiny_8": {
        "image_size": 8,
        "in_channels": 1,
        "ch": 32,
        "ch_mult": (1, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (4,),
        "dropout": 0.0,
        "num_heads": 1,
        "num_groups": 8,
    },
    "small_28": {
        "image_size": 28,
        "in_channels": 1,
        "ch": 32,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (7,),
        "dropout": 0.1,
        "num_heads": 1,
        "num_groups": 8,
    },
}
"""Named ``UNet`` configurations; see ``from_preset`` for their parameter counts."""

ShapeOrTensor = Any


def _require_positive_int(name: str, value: Any, where: str = "UNet") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"{where}: `{name}` must be a positive integer, received {name}={value!r}."
        )


def _validate_config(
    image_size: int,
    in_channels: int,
    ch: int,
    ch_mult: tuple[int, ...],
    num_res_blocks: int,
    attn_resolutions: tuple[int, ...],
    dropout: float,
    num_heads: int,
    num_classes: int | None,
    num_groups: int,
    where: str = "UNet",
) -> None:
    """Raise a ValueError naming the offending argument if the configuration is invalid."""
    for name, value in [
        ("image_size", image_size),
        ("in_channels", in_channels),
        ("ch", ch),
        ("num_res_blocks", num_res_blocks),
        ("num_heads", num_heads),
        ("num_groups", num_groups),
    ]:
        _require_positive_int(name, value, where)
    if not ch_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ch_mult):
        raise InputError(
            f"{where}: `ch_mult` must be a non-empty sequence of positive integers, "
            f"received ch_mult={ch_mult!r}."
        )
    factor = 2 ** (len(ch_mult) - 1)
    if image_size % factor:
        raise InputError(
            f"{where}: `image_size` must be divisible by 2**(len(ch_mult) - 1) = {factor} so that "
            f"every downsampling halves it exactly; received image_size={image_size} with "
            f"ch_mult={ch_mult}."
        )
    resolutions = [image_size // 2**level for level in range(len(ch_mult))]
    unknown = sorted(set(attn_resolutions) - set(resolutions))
    if unknown:
        raise InputError(
            f"{where}: `attn_resolutions` contains {unknown}, which never occur; the feature-map "
            f"sizes of this network are {resolutions}. Received attn_resolutions="
            f"{attn_resolutions}."
        )
    if ch % num_groups:
        raise InputError(
            f"{where}: `ch` must be divisible by `num_groups` (GroupNorm), received ch={ch} and "
            f"num_groups={num_groups}."
        )
    for level, size in enumerate(resolutions):
        width = ch * ch_mult[level]
        attends = size in attn_resolutions or level == len(ch_mult) - 1  # middle attention
        if attends and width % num_heads:
            raise InputError(
                f"{where}: `num_heads` must divide the {width} channels of the attention at "
                f"resolution {size}, received num_heads={num_heads}."
            )
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"{where}: `dropout` must be in [0, 1), received dropout={dropout}.")
    if num_classes is not None:
        _require_positive_int("num_classes", num_classes, where)


ENCODER_SETTINGS = (
    "image_size",
    "in_channels",
    "ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "num_heads",
    "use_scale_shift_norm",
    "num_groups",
    "resamp_with_conv",
)
"""The encoder's settings, shared by `UNet` and `NoisyClassifier`; the first eight in the order
`_validate_config` takes them."""


class Encoder:
    """The U-Net's encoder, shared by `UNet` and the noise-aware classifier
    (`ddpm_tf.guidance.NoisyClassifier`): the timestep (and class) embedding, ``conv_in``, the
    down path and the middle ResBlock-Attention-ResBlock. The host sets ``image_size``,
    ``in_channels``, ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``dropout``,
    ``num_heads``, ``use_scale_shift_norm`` and ``num_groups`` before ``_make_encoder``."""

    def _configure(self, settings: dict[str, Any], num_classes: int | None, where: str) -> None:
        """Validates the encoder's `ENCODER_SETTINGS` (messages start with `where`) and sets them
        as attributes of the same names."""
        settings = {**settings, "ch_mult": tuple(settings["ch_mult"])}
        settings["attn_resolutions"] = tuple(settings["attn_resolutions"])
        _validate_config(
            *(settings[k] for k in ENCODER_SETTINGS[:8]),
            num_classes,
            settings["num_groups"],
            where=where,
        )
        for name in ENCODER_SETTINGS:
            setattr(self, name, settings[name])
        self.dropout = float(self.dropout)
        self.use_scale_shift_norm = bool(self.use_scale_shift_norm)
        self.resamp_with_conv = bool(self.resamp_with_conv)

    def _make_encoder(self, num_classes: int | None) -> None:
        dtype = self.dtype_policy
        temb_dim = 4 * self.ch
        self.time_embed = TimestepEmbedding(self.ch, dtype=dtype, name="time_embed")
        self.temb_dense0 = keras.layers.Dense(temb_dim, dtype=dtype, name="temb_dense0")
        self.temb_dense1 = keras.layers.Dense(temb_dim, dtype=dtype, name="temb_dense1")
        self.label_embed = None
        if num_classes is not None:
            self.label_embed = keras.layers.Embedding(
                num_classes + 1, temb_dim, dtype=dtype, name="label_embed"
            )
        self.conv_in = keras.layers.Conv2D(self.ch, 3, padding="same", dtype=dtype, name="conv_in")
        self._make_down_path()
        top = self.ch * self.ch_mult[-1]
        self.mid_layers = [
            self._res_block(top, "mid_res0"),
            self._attention("mid_attn"),
            self._res_block(top, "mid_res1"),
        ]

    def _res_block(self, out_channels: int, name: str) -> ResidualBlock:
        return ResidualBlock(
            out_channels,
            dropout=self.dropout,
            use_scale_shift_norm=self.use_scale_shift_norm,
            num_groups=self.num_groups,
            dtype=self.dtype_policy,
            name=name,
        )

    def _attention(self, name: str) -> AttentionBlock:
        return AttentionBlock(
            self.num_heads, num_groups=self.num_groups, dtype=self.dtype_policy, name=name
        )

    def _stage(self, level: int, index: int, prefix: str) -> list[keras.layers.Layer]:
        """A ResidualBlock of the level's width, plus attention at attention resolutions."""
        name = f"{prefix}{level}_"
        stage = [self._res_block(self.ch * self.ch_mult[level], f"{name}res{index}")]
        if self.image_size // 2**level in self.attn_resolutions:
            stage.append(self._attention(f"{name}attn{index}"))
        return stage

    def _make_down_path(self) -> None:
        """Flat layer list; ``_down_push[i]`` marks outputs kept as skip connections."""
        layers, push = [], []
        last = len(self.ch_mult) - 1
        for level in range(last + 1):
            for index in range(self.num_res_blocks):
                stage = self._stage(level, index, "down")
                layers += stage
                push += [False] * (len(stage) - 1) + [True]
            if level != last:
                layers.append(
                    Downsample(self.resamp_with_conv, dtype=self.dtype_policy, name=f"down{level}")
                )
                push.append(True)
        self.down_layers = layers
        self._down_push = tuple(push)

    def _encode(self, h: ShapeOrTensor, apply: Callable) -> tuple[ShapeOrTensor, list]:
        """The down and middle paths on ``conv_in``'s output (tensors, or shapes for ``build``):
        (the middle's output, the skip connections the up path takes)."""
        skips = [h]
        for layer, push in zip(self.down_layers, self._down_push, strict=True):
            h = apply(layer, h)
            if push:
                skips.append(h)
        for layer in self.mid_layers:
            h = apply(layer, h)
        return h, skips

    def _build_encoder(self) -> tuple:
        """Builds the embedding and ``conv_in``; returns the shape ``conv_in`` gives."""
        x_shape = (None, self.image_size, self.image_size, self.in_channels)
        self.time_embed.build((None,))
        self.temb_dense0.build((None, self.ch))
        self.temb_dense1.build((None, 4 * self.ch))
        if self.label_embed is not None:
            self.label_embed.build((None,))
        self.conv_in.build(x_shape)
        return self.conv_in.compute_output_shape(x_shape)

    def _build_layer(self, layer: keras.layers.Layer, shape: tuple) -> tuple:
        shapes = (shape, (None, 4 * self.ch)) if isinstance(layer, ResidualBlock) else (shape,)
        layer.build(*shapes)
        return layer.compute_output_shape(*shapes)

    def _applier(self, emb: Any, training: bool | None) -> Callable[[keras.layers.Layer, Any], Any]:
        """apply(layer, h): a ResidualBlock takes the embedding ``emb``, other layers ``h`` alone."""

        def apply(layer: keras.layers.Layer, h: Any) -> Any:
            if isinstance(layer, ResidualBlock):
                return layer(h, emb, training=training)
            return layer(h)

        return apply

    def _encoder_config(self) -> dict[str, Any]:
        """The encoder's part of ``get_config``: its `ENCODER_SETTINGS` (tuples as lists)."""
        values = {name: getattr(self, name) for name in ENCODER_SETTINGS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def embed(self, t: Any, y: Any = None) -> Any:
        """Timestep (and class) embedding ``[B] -> [B, 4 * ch]``."""
        emb = self.temb_dense1(ops.silu(self.temb_dense0(self.time_embed(t))))
        if self.label_embed is not None:
            emb = emb + self.label_embed(y)
        return emb


@keras.saving.register_keras_serializable(package="ddpm_tf")
class UNet(Encoder, keras.Model):
    """DDPM U-Net; call as ``unet(x_t, t)`` / ``unet([x_t, t])`` or with labels ``y``.

    Architecture (Ho et al.): 3x3 ``conv_in``; for each level ``num_res_blocks``
    ``ResidualBlock``s of width ``ch * ch_mult[level]`` (each followed by attention when the
    feature-map size is in ``attn_resolutions``) and a ``Downsample`` except at the last
    level; a middle ResBlock-Attention-ResBlock; an up path with ``num_res_blocks + 1``
    ResBlocks per level, each taking the concatenation of the current features and one skip
    connection, with ``Upsample`` except at the first level; then GroupNorm, SiLU and a
    zero-initialised 3x3 ``conv_out`` computed in float32.

    The timestep embedding is ``Dense(4ch)(SiLU(Dense(4ch)(sinusoidal_ch(t))))``. With
    ``num_classes`` set, a learned table of ``num_classes + 1`` class embeddings is added to
    it; label ``num_classes`` is the "null" class for classifier-free guidance.

    Args:
        image_size: height and width of the (square) input images, in pixels.
        in_channels: image channels ``C``.
        ch: base channel count; level widths are ``ch * ch_mult[level]``.
        ch_mult: per-level channel multipliers; the image is downsampled
            ``len(ch_mult) - 1`` times.
        num_res_blocks: residual blocks per level on the down path.
        attn_resolutions: feature-map sizes at which self-attention is applied.
        dropout: dropout rate inside the residual blocks.
        num_heads: attention heads.
        use_scale_shift_norm: condition with ``GroupNorm(h) * (1 + scale) + shift``
            (Improved DDPM) instead of adding the embedding.
        learn_sigma: output ``2C`` channels (noise and variance interpolation).
        num_classes: number of classes for class conditioning, or None.
        num_groups: GroupNorm groups; must divide ``ch``.
        resamp_with_conv: use convolutions in Downsample/Upsample.

    All weights are created on construction: the configuration fixes every shape.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        num_heads: int = 1,
        use_scale_shift_norm: bool = False,
        learn_sigma: bool = False,
        num_classes: int | None = None,
        num_groups: int = 32,
        resamp_with_conv: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        encoder = {k: v for k, v in locals().items() if k in ENCODER_SETTINGS}
        self._configure(encoder, num_classes, "UNet")
        self.learn_sigma = bool(learn_sigma)
        self.num_classes = num_classes

        dtype = self.dtype_policy
        self._make_encoder(num_classes)
        self._make_up_path()
        self.norm_out = group_norm(num_groups, dtype, "norm_out")
        out_channels = 2 * in_channels if self.learn_sigma else in_channels
        # float32 head: losses and samplers work on float32 predictions.
        self.conv_out = keras.layers.Conv2D(
            out_channels,
            3,
            padding="same",
            kernel_initializer="zeros",
            dtype="float32",
            name="conv_out",
        )
        self.build((None, image_size, image_size, in_channels))

    # --- construction -------------------------------------------------------------------

    def _make_up_path(self) -> None:
        """Flat layer list; ``_up_pop[i]`` marks layers whose input gets a skip concatenated."""
        layers, pop = [], []
        for level in reversed(range(len(self.ch_mult))):
            for index in range(self.num_res_blocks + 1):
                stage = self._stage(level, index, "up")
                layers += stage
                pop += [True] + [False] * (len(stage) - 1)
            if level != 0:
                layers.append(
                    Upsample(self.resamp_with_conv, dtype=self.dtype_policy, name=f"up{level}")
                )
                pop.append(False)
        self.up_layers = layers
        self._up_pop = tuple(pop)

    def _route(
        self,
        h: ShapeOrTensor,
        apply: Callable[[keras.layers.Layer, ShapeOrTensor], ShapeOrTensor],
        concat: Callable[[ShapeOrTensor, ShapeOrTensor], ShapeOrTensor],
    ) -> ShapeOrTensor:
        """Run the down, middle and up paths on tensors or, for ``build``, on shapes."""
        h, skips = self._encode(h, apply)
        for layer, pop in zip(self.up_layers, self._up_pop, strict=True):
            if pop:
                h = concat(h, skips.pop())
            h = apply(layer, h)
        return h

    def build(self, input_shape: Any = None) -> None:
        """Create all weights. Every shape follows from the config; ``input_shape`` is unused."""
        if self.built:
            return

        def concat_shapes(a: tuple, b: tuple) -> tuple:
            return (*a[:-1], a[-1] + b[-1])

        h_shape = self._route(self._build_encoder(), self._build_layer, concat_shapes)
        self.norm_out.build(h_shape)
        self.conv_out.build(h_shape)

    # --- forward ------------------------------------------------------------------------

    def _unpack(self, inputs: Any, t: Any, y: Any) -> tuple[Any, Any, Any]:
        if isinstance(inputs, list | tuple):
            if t is not None or y is not None:
                raise InputError(
                    "UNet: pass either a list [x_t, t] / [x_t, t, y] or separate arguments "
                    "(x_t, t, y), not both."
                )
            if len(inputs) not in (2, 3):
                raise InputError(
                    f"UNet: a list input must be [x_t, t] or [x_t, t, y], received "
                    f"{len(inputs)} tensors."
                )
            x, t, *rest = inputs
            return x, t, (rest[0] if rest else None)
        if t is None:
            raise InputError("UNet: the timesteps `t` (shape [batch]) are required.")
        return inputs, t, y

    def _check_inputs(self, x: Any, t: Any, y: Any) -> None:
        size, channels = self.image_size, self.in_channels
        if len(x.shape) != 4 or tuple(x.shape[1:]) != (size, size, channels):
            raise InputError(
                f"UNet: `x_t` must have shape [batch, {size}, {size}, {channels}] "
                f"(image_size={size}, in_channels={channels}), received shape {tuple(x.shape)}."
            )
        if len(t.shape) != 1:
            raise InputError(f"UNet: `t` must have shape [batch], received shape {tuple(t.shape)}.")
        if self.num_classes is None:
            if y is not None:
                raise InputError(
                    "UNet: labels `y` were given but the model is unconditional (num_classes=None)."
                )
            return
        if y is None:
            raise InputError(
                f"UNet: labels `y` (shape [batch]) are required since num_classes="
                f"{self.num_classes}; use label {self.num_classes} for the null class."
            )
        if len(y.shape) != 1:
            raise InputError(f"UNet: `y` must have shape [batch], received shape {tuple(y.shape)}.")

    def call(self, inputs: Any, t: Any = None, y: Any = None, training: bool | None = None) -> Any:
        x, t, y = self._unpack(inputs, t, y)
        self._check_inputs(x, t, y)
        apply = self._applier(self.embed(t, y), training)

        def concat(a: Any, b: Any) -> Any:
            return ops.concatenate([a, b], axis=-1)

        h = self._route(self.conv_in(x), apply, concat)
        return self.conv_out(self.norm_out(h, silu=True))

    # --- serialisation ------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            **self._encoder_config(),
            "learn_sigma": self.learn_sigma,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        return cls(**config)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> UNet:
        """Same as the module-level ``from_preset``."""
        return from_preset(name, **overrides)


def from_preset(name: str, **overrides: Any) -> UNet:
    """Build a ``UNet`` from a named configuration in ``PRESETS``, updated by ``overrides``.

    Parameter counts (unconditional, ``learn_sigma=False``, as measured):

    - ``ddpm_cifar10``: Ho et al.'s CIFAR-10 model for 32x32x3 images; 35,746,307
      parameters, equal to Ho et al.'s count.
    - ``ddpm_256``: Ho et al.'s LSUN / CelebA-HQ model for 256x256x3 images;
      113,673,219 parameters (reported as 113.7M / 114M).
    - ``tiny_8``: 8x8x1 images, for tests and quick CPU experiments; 701,345 parameters.
    - ``small_28``: 28x28x1 images (e.g. MNIST) on a CPU; 1,112,801 parameters.

    ``learn_sigma`` and ``num_classes`` add output-head and embedding-table parameters.
    """
    if name not in PRESETS:
        raise InputError(f"Unknown UNet preset `name`={name!r}; available: {sorted(PRESETS)}.")
    return UNet(**{**PRESETS[name], **overrides})
