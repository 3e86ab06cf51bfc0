"""Dropout masks that are a function of (run seed, step, global sample row, layer), on every path.

Keras' Dropout draws its mask from a SeedGenerator: its state is not among the checkpointed
variables (a resumed run restarts the stream) and every replica advances it alike (N replicas draw N
copies of one replica's masks). Here the mask bit of element j of global sample row n is a hash of
(the layer's key, n, j):

    keep  iff  mix32(mix32(j ^ key) ^ mix32(salt ^ mix32(n))) >= round(rate * 2^32)

with j the element's index within its sample in channels-last order (pixel * C + channel) and
(key, salt) two Philox words of fold_in(step seed, layer id). `DiffusionModel.train_step` opens
`rows(step_seed, first_row)` around the network call, so a step's masks depend on the run's seed,
the step, the row of the global batch and the layer only: a resumed run and N replicas draw the
masks of one uninterrupted device. Outside `rows` (a custom training loop), the step seed comes from
the Dropout layer's SeedGenerator, as Keras would draw it.

Why a hash and not checkpointed seed states: checkpointing the SeedGenerators would fix resuming
but not replicas, and the mask would still be a tensor to draw, store for the gradient and read
back. The fused GroupNorm kernel (`ddpm_tf/kernels/group_norm.cc`) computes the same hash inside its
one pass over the activation and recomputes it in the gradient, so dropout costs it no extra
memory traffic; where the kernel does not run (XLA, GPU, exports, DDPM_TF_FUSED_KERNELS=0), `apply`
computes the identical mask with TensorFlow integer ops, so a run draws the same masks when it moves
between the two paths.
"""

from __future__ import annotations

import contextlib
import math
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from ddpm_tf import rng

__all__ = ["apply", "keep_mask", "layer_id", "layer_words", "rows", "threshold"]

_MIX = (0x7FEB352D, 0x846CA68B)  # multipliers of the "lowbias32" integer hash
_local = threading.local()  # one stack per thread: MirroredStrategy runs each replica in its own


@contextlib.contextmanager
def rows(seed: rng.SeedLike, first_row: int | tf.Tensor = 0) -> Iterator[None]:
    """Dropout inside this block draws the masks of `seed` (an int32 [2] step seed) for the rows
    `first_row, first_row + 1, ...` of the global batch (a replica's first row)."""
    stack = _local.__dict__.setdefault("stack", [])
    stack.append((rng.as_seed(seed), tf.cast(first_row, tf.int32)))
    try:
        yield
    finally:
        stack.pop()


def layer_id(path: str) -> int:
    """A stable id of a layer from the last two parts of its path ("down0_res0/norm2"): the names
    a U-Net gives its blocks, not the model's own name, which Keras may number."""
    return zlib.crc32("/".join(path.split("/")[-2:]).encode()) & 0x7FFFFFFF


def layer_words(path: str, seed_generator: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """(key and salt as uint32 [2], first row as int32 []) of the layer at `path` for this step."""
    stack = getattr(_local, "stack", None)
    if stack:
        seed, first_row = stack[-1]
    else:
        seed, first_row = tf.cast(seed_generator.next(), tf.int32), tf.constant(0, tf.int32)
    return rng.uniform_bits([2], rng.fold_in(seed, layer_id(path))), first_row


def threshold(rate: float) -> int:
    """The hash value below which an element is dropped: round(rate * 2^32), as the kernel has it
    (rate rounded to float32 first, as the kernel's attribute is)."""
    return min(4294967295, math.floor(float(np.float32(rate)) * 4294967296.0 + 0.5))


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """A 32-bit bijection with full avalanche (xor-shift-multiply) on uint32; the multiplies run
    in int32, which wraps modulo 2^32 on every backend."""

    def shift_xor(v: tf.Tensor, bits: int) -> tf.Tensor:
        return tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, tf.constant(bits, tf.uint32)))

    def times(v: tf.Tensor, m: int) -> tf.Tensor:
        product = tf.bitcast(v, tf.int32) * tf.constant(np.uint32(m).view(np.int32))
        return tf.bitcast(product, tf.uint32)

    return shift_xor(times(shift_xor(times(shift_xor(x, 16), _MIX[0]), 15), _MIX[1]), 16)


def _as_uint32(x: tf.Tensor) -> tf.Tensor:
    return tf.bitcast(tf.cast(x, tf.int32), tf.uint32)


def keep_mask(shape: Any, words: tf.Tensor, first_row: tf.Tensor, rate: float) -> tf.Tensor:
    """The boolean keep mask of `shape` ([B, ..., C]) for rows first_row .. first_row + B - 1."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    per_row = tf.reduce_prod(shape[1:])
    row = _as_uint32(tf.cast(first_row, tf.int32) + tf.range(shape[0]))
    sample = _mix32(tf.bitwise.bitwise_xor(words[1], _mix32(row)))[:, None]
    element = _mix32(tf.bitwise.bitwise_xor(_as_uint32(tf.range(per_row)), words[0]))[None, :]
    hashed = _mix32(tf.bitwise.bitwise_xor(element, sample))
    keep = hashed >= tf.constant(threshold(rate), tf.uint32)
    return tf.reshape(keep, shape)


def apply(x: tf.Tensor, words: tf.Tensor, first_row: tf.Tensor, rate: float) -> tf.Tensor:
    """Inverted dropout of `x` with the mask of `keep_mask`: kept elements scaled by 1 / (1 - rate)."""
    if rate <= 0:
        return x
    scale = np.float32(1.0) / (np.float32(1.0) - np.float32(rate))
    keep = keep_mask(tf.shape(x), words, first_row, rate)
    return tf.where(keep, x * tf.cast(scale, x.dtype), tf.zeros_like(x))
