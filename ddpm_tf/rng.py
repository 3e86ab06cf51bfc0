"""Stateless, seeded randomness that gives the same numbers in eager, graph and XLA execution.

Everything that samples takes a seed: an int or a pair of ints (or an int32 tensor [2]). Random
bits come from TensorFlow's stateless Philox generator, pinned explicitly because "auto_select" may
pick another generator under XLA. Even with Philox pinned, XLA turns the bits into floats
differently from the CPU kernels (measured: same uint32 bits, different `stateless_normal`
values), so the conversion to normals is done here, by Box-Muller on 24-bit uniforms, with
ordinary ops that every backend evaluates the same way up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

ALGORITHM = "philox"

SeedLike = int | Sequence[int] | np.ndarray | tf.Tensor


def as_seed(seed: SeedLike) -> tf.Tensor:
    """An int32 [2] seed tensor; an int s becomes [0, s]."""
    if isinstance(seed, tf.Tensor | tf.Variable):
        if seed.shape.rank not in (None, 1) or (
            seed.shape.rank == 1 and seed.shape[0] not in (None, 2)
        ):
            raise ValueError(
                f"`seed` must be an int or a pair of ints, got a tensor of shape {seed.shape}."
            )
        return tf.cast(seed, tf.int32)
    if isinstance(seed, bool) or seed is None:
        raise ValueError(f"`seed` must be an int or a pair of ints, got {seed!r}.")
    if isinstance(seed, int | np.integer):
        return tf.constant([0, int(seed)], tf.int32)
    pair = np.asarray(seed)
    if pair.shape != (2,) or not np.issubdtype(pair.dtype, np.integer):
        raise ValueError(f"`seed` must be an int or a pair of ints, got {seed!r}.")
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
