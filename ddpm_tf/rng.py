"""Stateless, seeded randomness that gives the same numbers in eager, graph and XLA execution.

Everything that samples takes a seed: an int or a pair of ints (or an int32 tensor [2]). Random
bits come from TensorFlow's stateless Philox generator, pinned explicitly because "auto_select" may
pick another generator under XLA. Even with Philox pinned, XLA turns the bits into floats
differently from the CPU kernels (measured: same uint32 bits, different `stateless_normal`
values), so the conversion to normals is done here, by Box-Muller on 24-bit uniforms, with
ordinary ops that every backend evaluates the same way up to float rounding.

`portable_normal` is a second noise source for graphs that leave TensorFlow: it uses no TF random
op, only arithmetic that TFLite builtins and ONNX operators evaluate bit-identically, so exported
samplers (TFLite, ONNX, SavedModel) draw exactly the noise of the in-memory sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ddpm_tf.errors import InputError

ALGORITHM = "philox"

SeedLike = int | Sequence[int] | np.ndarray | tf.Tensor


def as_seed(seed: SeedLike) -> tf.Tensor:
    """An int32 [2] seed tensor; an int s becomes [0, s]."""
    if isinstance(seed, tf.Tensor | tf.Variable):
        if seed.shape.rank not in (None, 1) or (
            seed.shape.rank == 1 and seed.shape[0] not in (None, 2)
        ):
            raise InputError(
                f"`seed` must be an int or a pair of ints, got a tensor of shape {seed.shape}."
            )
        return tf.cast(seed, tf.int32)
    if isinstance(seed, bool) or seed is None:
        raise InputError(f"`seed` must be an int or a pair of ints, got {seed!r}.")
    if isinstance(seed, int | np.integer):
        return tf.constant([0, int(seed)], tf.int32)
    pair = np.asarray(seed)
    if pair.shape != (2,) or not np.issubdtype(pair.dtype, np.integer):
        raise InputError(f"`seed` must be an int or a pair of ints, got {seed!r}.")
    return tf.constant(pair.astype(np.int32))


def fold_in(seed: tf.Tensor, data: int | tf.Tensor) -> tf.Tensor:
    """A new seed derived from `seed` and the integer `data` (a step index, a replica id)."""
    return tf.random.experimental.stateless_fold_in(
        as_seed(seed), tf.cast(data, tf.int32), alg=ALGORITHM
    )


def uniform_bits(shape, seed: SeedLike) -> tf.Tensor:
    """uint32 random bits of `shape` from Philox (identical in graph and XLA)."""
    return tf.random.stateless_uniform(
        shape, seed=as_seed(seed), minval=None, maxval=None, dtype=tf.uint32, alg=ALGORITHM
    )


def bits_to_unit(bits: tf.Tensor) -> tf.Tensor:
    """Maps uint32 bits to float32 uniforms in the open interval (0, 1) using their top 24 bits."""
    top = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    return (top + 0.5) * (1.0 / 16777216.0)


def normal(shape, seed: SeedLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Standard normal noise of `shape`, a deterministic function of `seed` (Box-Muller)."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    count = tf.reduce_prod(shape)
    u = bits_to_unit(uniform_bits(tf.stack([2, count]), seed))
    radius = tf.sqrt(-2.0 * tf.math.log(u[0]))
    z = radius * tf.cos((2.0 * math.pi) * u[1])
    return tf.cast(tf.reshape(z, shape), dtype)


def split(seed: SeedLike, num: int = 2) -> list[tf.Tensor]:
    """`num` independent seeds from one."""
    return [fold_in(seed, -(i + 1)) for i in range(num)]


# ------------------------------------------------------------------------------ portable noise
# A counter-based generator built only from operations that TensorFlow, TFLite builtins and ONNX
# evaluate identically: float32 multiplies, adds and floors of integers below 2^24 (exact in IEEE
# arithmetic whatever the kernel), scalings by powers of two (exact), and int32 floor division and
# modulo of the seed. It is a Philox-style network on four 12-bit words: each round multiplies two
# words by 12-bit constants (products below 2^24), swaps the high and low halves of the products
# into the other words and adds the key; the round keys are bumped by Weyl constants. Its integer
# outputs are bit-identical across runtimes; the normals differ only by the rounding of log, sqrt
# and cos in each runtime (measured: up to 4e-6 with LiteRT's XNNPACK kernels, 0 in onnxruntime).

PORTABLE_ROUNDS = 10
PORTABLE_LIMIT = 1 << 24  # element indices and stream ids must fit in two 12-bit words

_WORD = 4096.0  # 2^12
_INV_WORD = 1.0 / 4096.0  # exact: a power of two
_MULTIPLIERS = (3365.0, 3289.0)  # top 12 bits of Philox's 0xD2511F53 and 0xCD9E8D57
_WEYL = (2531.0, 2999.0, 1453.0, 3637.0)  # odd 12-bit key increments


def _split_word(value: tf.Tensor, shift: int, width: int = 4096) -> tf.Tensor:
    """floor(value / 2^shift) mod width for a non-negative int32 `value`.

    Only non-negative values are divided: there floor and truncating division agree, and
    converters differ in which one an integer division becomes.
    """
    if shift:
        value = tf.math.floordiv(value, tf.constant(1 << shift, tf.int32))
    return tf.math.floormod(value, tf.constant(width, tf.int32))


def _unsigned(value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """An int32 as (its low 31 bits, its sign bit), both non-negative int32."""
    negative = value < 0
    shifted = (tf.minimum(value, -1) + 2147483647) + 1  # value + 2^31, never overflowing
    return tf.where(negative, shifted, value), tf.cast(negative, tf.int32)


def portable_key(seed: SeedLike) -> list[tf.Tensor]:
    """Four 12-bit key words (float32 scalars) from all 32 bits of seed[1] and bits 0-15 of seed[0]."""
    seed = as_seed(seed)
    (low0, _), (low1, sign1) = _unsigned(seed[0]), _unsigned(seed[1])
    words = [
        _split_word(low1, 0),
        _split_word(low1, 12),
        _split_word(low1, 24, 128) + 128 * sign1 + 256 * _split_word(low0, 0, 16),
        _split_word(low0, 4),
    ]
    return [tf.cast(w, tf.float32) for w in words]


def _mod_word(x: tf.Tensor) -> tf.Tensor:
    """x mod 2^12 for non-negative integer-valued float32 x below 2^24 (exact)."""
    return x - tf.floor(x * _INV_WORD) * _WORD


def _hi_lo(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    hi = tf.floor(x * _INV_WORD)
    return hi, x - hi * _WORD


def portable_words(count, seed: SeedLike, stream=0) -> tf.Tensor:
    """The generator's output words: float32 integers in [0, 4096) of shape [4, count].

    Element i of stream `stream` (an int in [0, 2^24)) is the block cipher of the counter
    (i mod 2^12, i div 2^12, stream mod 2^12, stream div 2^12) under the key of `seed`.
    `count` must be at most 2^24.
    """
    for name, value, high in (
        ("count", count, PORTABLE_LIMIT),
        ("stream", stream, PORTABLE_LIMIT - 1),
    ):
        static = tf.get_static_value(value)
        if static is not None and not 0 <= int(static) <= high:
            raise InputError(
                f"The portable generator's `{name}` must lie in [0, {high}], got {int(static)}."
            )
    key = portable_key(seed)
    stream = tf.cast(stream, tf.int32)
    index = tf.range(tf.cast(count, tf.int32), dtype=tf.int32)
    zeros = tf.zeros_like(index, tf.float32)
    c = [
        tf.cast(_split_word(index, 0), tf.float32),
        tf.cast(_split_word(index, 12), tf.float32),
        zeros + tf.cast(_split_word(stream, 0), tf.float32),
        zeros + tf.cast(_split_word(stream, 12), tf.float32),
    ]
    for _ in range(PORTABLE_ROUNDS):
        hi0, lo0 = _hi_lo(_MULTIPLIERS[0] * c[0])
        hi1, lo1 = _hi_lo(_MULTIPLIERS[1] * c[2])
        c = [
            _mod_word(hi1 + c[1] + key[0]),
            _mod_word(lo1 + key[2]),
            _mod_word(hi0 + c[3] + key[1]),
            _mod_word(lo0 + key[3]),
        ]
        key = [_mod_word(k + w) for k, w in zip(key, _WEYL, strict=True)]
    return tf.stack(c)


def portable_normal(shape, seed: SeedLike, stream=0, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Standard normal noise of `shape` from the portable generator (Box-Muller on 23-bit uniforms).

    Every op is a TFLite builtin and an ONNX operator, and no TF random op is involved, so an
    exported graph draws the same noise as TensorFlow. `stream` selects an independent stream
    (e.g. a sampling step) for the same seed.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    words = portable_words(tf.reduce_prod(shape), seed, stream)
    half = 0.5 * _WORD  # 23-bit uniforms: (w0 * 2^11 + floor(w1 / 2) + 0.5) / 2^23, all exact
    u1 = (words[0] * half + tf.floor(words[1] * 0.5) + 0.5) * (1.0 / 8388608.0)
    u2 = (words[2] * half + tf.floor(words[3] * 0.5) + 0.5) * (1.0 / 8388608.0)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos((2.0 * math.pi) * u2)
    return tf.cast(tf.reshape(z, shape), dtype)
