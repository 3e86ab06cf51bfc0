"""Building blocks of the DDPM U-Net (Ho et al. 2020; Nichol & Dhariwal 2021).

All layers work on channels-last images ``[batch, height, width, channels]`` and are
registered for Keras serialisation, so models containing them round-trip through
``.keras`` files. Under a mixed-precision policy the layers compute in the policy's
compute dtype (GroupNorm statistics and the attention softmax are taken in float32)
and return the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from ddpm_tf import dropout as masks
from ddpm_tf import kernels
from ddpm_tf.errors import InputError

GROUP_NORM_EPSILON = 1e-6
"""GroupNorm epsilon of the reference TensorFlow DDPM implementation."""

Shape = tuple[int | None, ...]


def _largest_divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in range(1, min(n, bound) + 1) if n % d == 0)


def check_num_groups(num_groups: int, channels: int, where: str) -> None:
    """Raise a ValueError unless ``num_groups`` divides ``channels`` (GroupNorm requirement)."""
    if channels % num_groups:
        raise InputError(
            f"{where}: `num_groups` must divide the number of channels, but received "
            f"num_groups={num_groups} for {channels} channels. The largest valid value "
            f"not above {num_groups} is {_largest_divisor_at_most(channels, num_groups)}."
        )


@keras.saving.register_keras_serializable(package="ddpm_tf")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNorm over the channel axis, then optionally a per-sample affine map, SiLU and dropout.

    ``norm(x, scale=None, shift=None, silu=False, dropout=None, training=None)`` computes
    ``dropout(act(GroupNorm(x) * (1 + scale) + shift))`` for ``x`` ``[B, ..., C]``, with
    ``scale``/``shift`` broadcastable to ``[B, 1, ..., C]`` (the scale-shift conditioning of
    Improved DDPM) and ``dropout`` a ``keras.layers.Dropout`` applied when ``training``. Where
    :func:`ddpm_tf.kernels.active` allows (CPU, no XLA, not exporting) all of it runs as one
    fused kernel each way; elsewhere as Keras' GroupNormalization, the same arithmetic in the
    compute dtype. On both paths the dropout mask is the hash of :mod:`ddpm_tf.dropout` (of the
    step's seed, the global sample row and this layer), not Keras' Dropout stream: the Dropout
    layer gives the rate and, outside a training step, its seed generator. Weights (``gamma``,
    ``beta``) and config are Keras' own.
    """

    def call(
        self,
        inputs: Any,
        scale: Any = None,
        shift: Any = None,
        silu: bool = False,
        dropout: keras.layers.Dropout | None = None,
        training: bool | None = None,
    ) -> Any:
        if (scale is None) != (shift is None):
            raise InputError("GroupNorm: pass both `scale` and `shift`, or neither.")
        rate = dropout.rate if dropout is not None and training else 0.0
        # (key and salt uint32 [2], first global row): this step's mask of this layer
        seed = masks.layer_words(self.path or self.name, dropout.seed_generator) if rate else None
        if self._fusable(inputs) and kernels.active():
            return self._fused(inputs, scale, shift, silu, rate, seed)
        h = super().call(inputs)
        if scale is not None:
            h = h * (1.0 + scale) + shift
        h = ops.silu(h) if silu else h
        return h if seed is None else masks.apply(h, *seed, rate)

    def _fusable(self, inputs: Any) -> bool:
        return self.axis in (-1, len(inputs.shape) - 1) and self.scale and self.center

    def _fused(
        self, inputs: Any, scale: Any, shift: Any, silu: bool, rate: float, seed: Any
    ) -> Any:
        channels = inputs.shape[-1]
        per_sample = (ops.shape(inputs)[0], channels)

        def per_channel(v: Any) -> Any:
            return ops.broadcast_to(ops.reshape(ops.cast(v, "float32"), (-1, channels)), per_sample)

        gamma, beta = per_channel(self.gamma), per_channel(self.beta)
        if scale is None:
            a, b = gamma, beta
        else:
            s = per_channel(scale)
            a, b = gamma * (1.0 + s), beta * (1.0 + s) + per_channel(shift)
        if seed is not None:
            words, first_row = seed
            seed = ops.concatenate(
                [ops.cast(words, "int64"), ops.cast(first_row, "int64")[None]], 0
            )
        y = kernels.group_norm(inputs, a, b, self.groups, self.epsilon, silu, rate, seed)
        return ops.cast(y, self.compute_dtype)


def group_norm(num_groups: int, dtype: Any, name: str) -> GroupNorm:
    """GroupNorm over the channel axis with the DDPM epsilon (statistics in float32)."""
    return GroupNorm(groups=num_groups, epsilon=GROUP_NORM_EPSILON, dtype=dtype, name=name)


def _conv(
    filters: int, kernel_size: int, dtype: Any, name: str, strides: int = 1, zero: bool = False
) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer="zeros" if zero else "glorot_uniform",
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="ddpm_tf")
class TimestepEmbedding(keras.layers.Layer):
    """Sinusoidal embedding of diffusion timesteps, ``[B] -> [B, dim]``.

    Follows ``get_timestep_embedding`` of Ho et al.: the first ``dim // 2`` features are
    ``sin(t * f_i)`` and the next ``dim // 2`` are ``cos(t * f_i)`` with frequencies
    ``f_i = exp(-log(max_period) * i / (dim // 2 - 1))``; an odd ``dim`` is zero-padded.
    The embedding is computed in float32 (timesteps up to ~1000 need it) and then cast to
    the compute dtype. Timesteps may be integer or float.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(dim) != dim or dim < 4:
            raise InputError(f"TimestepEmbedding: `dim` must be an integer >= 4, received {dim}.")
        if max_period <= 1:
            raise InputError(f"TimestepEmbedding: `max_period` must be > 1, received {max_period}.")
        self.dim = int(dim)
        self.max_period = float(max_period)
        # Keep float timesteps in full precision: do not cast inputs to float16.
        self.autocast = False
        half = self.dim // 2
        exponents = np.arange(half, dtype=np.float64) / (half - 1)
        self._frequencies = np.exp(-math.log(self.max_period) * exponents).astype(np.float32)

    def call(self, t: Any) -> Any:
        t = ops.cast(ops.reshape(t, (-1, 1)), "float32")
        args = t * ops.convert_to_tensor(self._frequencies[None, :])
        emb = ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)
        if self.dim % 2:
            emb = ops.pad(emb, [[0, 0], [0, 1]])
        return ops.cast(emb, self.compute_dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0] if input_shape else None, self.dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


@keras.saving.register_keras_serializable(package="ddpm_tf")
class ResidualBlock(keras.layers.Layer):
    """DDPM residual block with timestep conditioning, called as ``block(x, temb)``.

    ``x`` is ``[B, H, W, C_in]`` and ``temb`` is ``[B, D]``; the output is
    ``[B, H, W, out_channels]``. Computes

        h = Conv3x3(SiLU(GroupNorm(x)))
        e = Dense(SiLU(temb))
        additive:     h = GroupNorm(h + e)
        scale-shift:  h = GroupNorm(h) * (1 + scale) + shift,  (scale, shift) = split(e)
        out = skip(x) + Conv3x3(Dropout(SiLU(h)))

    where ``skip`` is a 1x1 convolution when ``C_in != out_channels`` and the identity
    otherwise. The last convolution is zero-initialised, so a fresh block is the identity
    on its skip path (Ho et al.). ``use_scale_shift_norm`` selects the adaptive
    GroupNorm of Improved DDPM. ``num_groups`` must divide ``C_in`` and ``out_channels``.
    """

    def __init__(
        self,
        out_channels: int,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        num_groups: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if out_channels < 1:
            raise InputError(
                f"ResidualBlock: `out_channels` must be positive, received {out_channels}."
            )
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"ResidualBlock: `dropout` must be in [0, 1), received {dropout}.")
        check_num_groups(num_groups, out_channels, "ResidualBlock")
        self.out_channels = int(out_channels)
        self.dropout = float(dropout)
        self.use_scale_shift_norm = bool(use_scale_shift_norm)
        self.num_groups = int(num_groups)

        dtype = self.dtype_policy
        emb_units = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        self.norm1 = group_norm(self.num_groups, dtype, "norm1")
        self.conv1 = _conv(self.out_channels, 3, dtype, "conv1")
        self.temb_proj = keras.layers.Dense(emb_units, dtype=dtype, name="temb_proj")
        self.norm2 = group_norm(self.num_groups, dtype, "norm2")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=dtype, name="dropout")
        self.conv2 = _conv(self.out_channels, 3, dtype, "conv2", zero=True)
        self.skip = None

    def build(self, x_shape: Shape, temb_shape: Shape) -> None:
        in_channels = x_shape[-1]
        check_num_groups(self.num_groups, in_channels, "ResidualBlock")
        out_shape = self.compute_output_shape(x_shape, temb_shape)
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        self.temb_proj.build(temb_shape)
        self.norm2.build(out_shape)
        self.conv2.build(out_shape)
        if in_channels != self.out_channels:
            self.skip = _conv(self.out_channels, 1, self.dtype_policy, "skip")
            self.skip.build(x_shape)

    def call(self, x: Any, temb: Any, training: bool | None = None) -> Any:
        h = self.conv1(self.norm1(x, silu=True))
        emb = ops.reshape(self.temb_proj(ops.silu(temb)), (-1, 1, 1, self.temb_proj.units))
        if self.use_scale_shift_norm:
            scale, shift = ops.split(emb, 2, axis=-1)
            h = self.norm2(
                h, scale, shift, silu=True, dropout=self.dropout_layer, training=training
            )
        else:
            h = self.norm2(h + emb, silu=True, dropout=self.dropout_layer, training=training)
        h = self.conv2(h)
        skip = x if self.skip is None else self.skip(x)
        return skip + h

    def compute_output_shape(self, x_shape: Shape, temb_shape: Shape) -> Shape:
        return (*x_shape[:-1], self.out_channels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "dropout": self.dropout,
            "use_scale_shift_norm": self.use_scale_shift_norm,
            "num_groups": self.num_groups,
        }


@keras.saving.register_keras_serializable(package="ddpm_tf")
class AttentionBlock(keras.layers.Layer):
    """Multi-head self-attention over the ``H * W`` spatial positions, ``[B,H,W,C] -> same``.

    ``out = x + proj(attention(q, k, v))`` with ``q, k, v`` per-pixel linear maps of
    ``GroupNorm(x)`` (1x1 convolutions with bias) and ``proj`` a zero-initialised 1x1
    projection. Each of the ``num_heads`` heads attends with ``C / num_heads`` channels
    and logits scaled by ``(C / num_heads) ** -0.5``; the softmax is taken in float32.
    """

    def __init__(self, num_heads: int = 1, num_groups: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_heads < 1:
            raise InputError(f"AttentionBlock: `num_heads` must be positive, received {num_heads}.")
        self.num_heads = int(num_heads)
        self.num_groups = int(num_groups)
        self.norm = group_norm(self.num_groups, self.dtype_policy, "norm")

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        check_num_groups(self.num_groups, channels, "AttentionBlock")
        if channels % self.num_heads:
            raise InputError(
                f"AttentionBlock: `num_heads` must divide the number of channels, but "
                f"received num_heads={self.num_heads} for {channels} channels."
            )
        dtype = self.dtype_policy
        self.norm.build(input_shape)
        self.q = keras.layers.Dense(channels, dtype=dtype, name="q")
        self.k = keras.layers.Dense(channels, dtype=dtype, name="k")
        self.v = keras.layers.Dense(channels, dtype=dtype, name="v")
        self.proj = keras.layers.Dense(
            channels, kernel_initializer="zeros", dtype=dtype, name="proj_out"
        )
        for dense in (self.q, self.k, self.v, self.proj):
            dense.build(input_shape)

    def _split_heads(self, x: Any, positions: Any) -> Any:
        """``[B, H, W, C] -> [B, heads, H*W, C/heads]``."""
        head_dim = x.shape[-1] // self.num_heads
        x = ops.reshape(x, (-1, positions, self.num_heads, head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, x: Any) -> Any:
        _, height, width, channels = ops.shape(x)
        positions = height * width
        h = self.norm(x)
        # Scaling q and k by d**-0.25 each equals scaling the logits by d**-0.5 but keeps
        # the float16 logits in range.
        scale = (channels // self.num_heads) ** -0.25
        q = self._split_heads(self.q(h) * scale, positions)
        k = self._split_heads(self.k(h) * scale, positions)
        v = self._split_heads(self.v(h), positions)
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # [B, heads, N_q, N_k]
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), v.dtype)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # [B, N, heads, d]
        out = ops.reshape(out, (-1, height, width, channels))
        return x + self.proj(out)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_groups": self.num_groups,
        }


def _scaled(size: int | None, factor: float, round_up: bool = False) -> int | None:
    if size is None:
        return None
    return math.ceil(size * factor) if round_up else math.floor(size * factor)


@keras.saving.register_keras_serializable(package="ddpm_tf")
class Downsample(keras.layers.Layer):
    """Halve the spatial size, ``[B, H, W, C] -> [B, H/2, W/2, C]``.

    A stride-2 3x3 convolution ("same" padding, as in Ho et al.) when ``with_conv``,
    otherwise 2x2 average pooling.
    """

    def __init__(self, with_conv: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_conv = bool(with_conv)
        if not self.with_conv:
            self.pool = keras.layers.AveragePooling2D(2, dtype=self.dtype_policy, name="pool")

    def build(self, input_shape: Shape) -> None:
        if self.with_conv:
            self.conv = _conv(input_shape[-1], 3, self.dtype_policy, "conv", strides=2)
            self.conv.build(input_shape)

    def call(self, x: Any) -> Any:
        return self.conv(x) if self.with_conv else self.pool(x)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        batch, height, width, channels = input_shape
        # "same" stride-2 convolutions round odd sizes up, pooling rounds them down.
        up = self.with_conv
        return (batch, _scaled(height, 0.5, up), _scaled(width, 0.5, up), channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "with_conv": self.with_conv}


@keras.saving.register_keras_serializable(package="ddpm_tf")
class Upsample(keras.layers.Layer):
    """Double the spatial size, ``[B, H, W, C] -> [B, 2H, 2W, C]``.

    Nearest-neighbour upsampling followed, when ``with_conv``, by a 3x3 convolution (its
    weights are the sub-layer ``conv``), computed as ``upsample_conv``: the same function in
    4/9 of the multiply-adds.
    """

    def __init__(self, with_conv: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_conv = bool(with_conv)
        self.resize = keras.layers.UpSampling2D(
            2, interpolation="nearest", dtype=self.dtype_policy, name="resize"
        )

    def build(self, input_shape: Shape) -> None:
        self.resize.build(input_shape)  # weightless, but Keras checks that every layer is built
        if self.with_conv:
            self.conv = _conv(input_shape[-1], 3, self.dtype_policy, "conv")
            self.conv.build(self.compute_output_shape(input_shape))

    def call(self, x: Any) -> Any:
        if not self.with_conv:
            return self.resize(x)
        return upsample_conv(x, self.conv.kernel, self.conv.bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        batch, height, width, channels = input_shape
        return (batch, _scaled(height, 2), _scaled(width, 2), channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "with_conv": self.with_conv}


def upsample_conv(x: Any, kernel: Any, bias: Any) -> Any:
    """``conv3x3_same(nearest_upsample_2x(x)) + bias`` without forming the upsampled image.

    ``x [B, H, W, Cin]``, ``kernel [3, 3, Cin, Cout]`` -> ``[B, 2H, 2W, Cout]``. An output row
    of parity ``a`` reads upsampled rows that repeat only two rows of ``x``: rows ``(i - 1, i)``
    with the kernel rows ``(k0, k1 + k2)`` when ``a = 0``, rows ``(i, i + 1)`` with
    ``(k0 + k1, k2)`` when ``a = 1``; columns alike. So each of the four output phases is a 2x2
    convolution of ``x`` (zero-padded by one on the side it reads past), and ``depth_to_space``
    interleaves them: 16 taps per input pixel instead of 36, the same sums up to round-off.
    """
    phases = []
    for a, rows in enumerate(_phase_taps(kernel, axis=0)):
        for b, taps in enumerate(_phase_taps(rows, axis=1)):
            padded = ops.pad(x, [[0, 0], [1 - a, a], [1 - b, b], [0, 0]])
            phases.append(ops.conv(padded, taps, strides=1, padding="valid"))
    return ops.depth_to_space(ops.concatenate(phases, axis=-1), 2) + bias


def _phase_taps(kernel: Any, axis: int) -> tuple[Any, Any]:
    """The 2-tap kernels along ``axis`` of a 3-tap one, for output parity 0 and 1."""
    k0, k1, k2 = ops.unstack(kernel, 3, axis=axis)
    return ops.stack([k0, k1 + k2], axis=axis), ops.stack([k0 + k1, k2], axis=axis)


@keras.saving.register_keras_serializable(package="ddpm_tf")
class AttentionPool(keras.layers.Layer):
    """Attention pooling, ``[B, H, W, C] -> [B, output_dim]``: the head of guided-diffusion's
    noise-aware classifier (Dhariwal & Nichol 2021).

    The mean over the ``H * W`` positions is prepended as one more token, every token gets a
    learned position embedding, and a multi-head attention whose only query is that mean token
    reads all ``H * W + 1`` tokens; a linear map of what it reads is the output, computed in
    float32 (logits). Heads attend with ``C / num_heads`` channels, logits scaled by
    ``(C / num_heads) ** -0.5``.
    """

    def __init__(self, output_dim: int, num_heads: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(output_dim) != output_dim or output_dim < 1:
            raise InputError(f"AttentionPool: `output_dim` must be positive, got {output_dim}.")
        if int(num_heads) != num_heads or num_heads < 1:
            raise InputError(f"AttentionPool: `num_heads` must be positive, got {num_heads}.")
        self.output_dim = int(output_dim)
        self.num_heads = int(num_heads)

    def build(self, input_shape: Shape) -> None:
        _, height, width, channels = input_shape
        if None in (height, width, channels) or channels % self.num_heads:
            raise InputError(
                f"AttentionPool: needs a fixed [B, H, W, C] input with C divisible by "
                f"num_heads={self.num_heads}, got {tuple(input_shape)}."
            )
        self.position = self.add_weight(
            shape=(height * width + 1, channels),
            initializer=keras.initializers.RandomNormal(stddev=channels**-0.5),
            name="position",
        )
        dtype = self.dtype_policy
        self.qkv = keras.layers.Dense(3 * channels, dtype=dtype, name="qkv")
        self.qkv.build((None, height * width + 1, channels))
        self.proj = keras.layers.Dense(self.output_dim, dtype="float32", name="proj")
        self.proj.build((None, channels))

    def call(self, x: Any) -> Any:
        _, height, width, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        tokens = ops.reshape(x, (-1, height * width, channels))
        mean = ops.mean(tokens, axis=1, keepdims=True)  # prepended by padding, not concatenation:
        place = [[0, 0], [0, height * width], [0, 0]]  # tf2onnx lacks the ShapeN of its gradient
        tokens = ops.pad(mean, place) + ops.pad(tokens, [[0, 0], [1, 0], [0, 0]])
        tokens = tokens + ops.cast(self.position, tokens.dtype)[None]
        q, k, v = ops.split(self.qkv(tokens), 3, axis=-1)
        q = ops.split(q, [1], axis=1)[0]  # the mean token's query alone (split: TFLite can
        q = ops.reshape(q, (-1, 1, heads, head_dim))  # take its gradient, a slice's it cannot)
        k = ops.reshape(k, (-1, height * width + 1, heads, head_dim))
        v = ops.reshape(v, (-1, height * width + 1, heads, head_dim))
        logits = ops.einsum("bqhd,bkhd->bhqk", q, k) * head_dim**-0.5
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), v.dtype)
        read = ops.reshape(ops.einsum("bhqk,bkhd->bqhd", weights, v), (-1, channels))
        return self.proj(ops.cast(read, "float32"))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_dim": self.output_dim, "num_heads": self.num_heads}
