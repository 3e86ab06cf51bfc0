"""Dropout masks of ddpm_tf.dropout: one hash, computed alike by numpy (here), TensorFlow's ops and
the fused kernel, and a function of the global row, so a replica's rows draw one device's masks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import dropout as masks
from ddpm_tf import kernels
from ddpm_tf.layers import GroupNorm

M32 = np.uint64(0xFFFFFFFF)


def mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 in uint64 arithmetic, reduced modulo 2^32 after each multiply."""
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    return x ^ (x >> np.uint64(16))


def reference_keep(shape, key: int, salt: int, first_row: int, rate: float) -> np.ndarray:
    """The documented rule: keep iff mix32(mix32(j ^ key) ^ mix32(salt ^ mix32(row))) >= rate 2^32."""
    rows = np.arange(first_row, first_row + shape[0], dtype=np.uint64)
    j = np.arange(int(np.prod(shape[1:])), dtype=np.uint64)
    sample = mix32(np.uint64(salt) ^ mix32(rows))[:, None]
    hashed = mix32(mix32(j ^ np.uint64(key))[None, :] ^ sample)
    return (hashed >= np.uint64(round(float(np.float32(rate)) * 2**32))).reshape(shape)


WORDS = (0x9E3779B9, 0x12345678)  # a key and a salt above 2^31: the int32/uint32 views must agree


def tf_keep(shape, first_row, rate, words=WORDS):
    return masks.keep_mask(shape, tf.constant(words, tf.uint32), first_row, rate).numpy()


def fused_keep(shape, first_row, rate, dtype="float32", words=WORDS):
    """The kernel's mask, read off its output: GroupNorm + 10 is never 0 where kept."""
    x = tf.random.stateless_normal(shape, [1, 2])
    per_sample = (shape[0], shape[-1])
    y = kernels.group_norm(
        tf.cast(x, dtype),
        tf.ones(per_sample),  # the per-sample scale and offset are float32 for every x dtype
        tf.fill(per_sample, 10.0),
        4,
        1e-6,
        False,
        rate,
        tf.constant([*words, first_row], tf.int64),
    )
    return tf.cast(y, tf.float32).numpy() != 0


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_tensorflow_ops_compute_the_documented_hash(rate):
    shape = (3, 5, 4, 8)
    np.testing.assert_array_equal(tf_keep(shape, 7, rate), reference_keep(shape, *WORDS, 7, rate))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_fused_kernel_draws_the_same_mask_as_tensorflow_ops(dtype):
    shape, rate = (4, 6, 6, 16), 0.3
    np.testing.assert_array_equal(fused_keep(shape, 5, rate, dtype), tf_keep(shape, 5, rate))


def test_xla_draws_the_same_mask():
    shape, rate = (2, 8, 8, 8), 0.2
    compiled = tf.function(lambda: masks.keep_mask(shape, tf.constant(WORDS, tf.uint32), 3, rate))
    np.testing.assert_array_equal(
        tf.function(compiled, jit_compile=True)().numpy(), tf_keep(shape, 3, rate)
    )


@pytest.mark.parametrize("path", ["ops", "fused"])
def test_a_replicas_rows_draw_the_rows_of_the_global_batch(path):
    """Rows 2:4 of a batch of 4 are the mask of a batch of 2 starting at global row 2."""
    keep = tf_keep if path == "ops" else fused_keep
    whole = keep((4, 6, 6, 16), 0, 0.3)
    np.testing.assert_array_equal(keep((2, 6, 6, 16), 2, 0.3), whole[2:])
    assert not np.array_equal(whole[:2], whole[2:])  # and rows differ from one another


def test_the_mask_keeps_one_minus_rate_and_apply_scales_the_kept():
    shape, rate = (16, 16, 16, 32), 0.3
    keep = tf_keep(shape, 0, rate)
    p, n = 1 - rate, keep.size
    assert abs(keep.mean() - p) < 5 * np.sqrt(p * rate / n)
    x = tf.random.stateless_normal(shape, [3, 4])
    y = masks.apply(x, tf.constant(WORDS, tf.uint32), 0, rate).numpy()
    np.testing.assert_array_equal(y == 0, ~keep)
    np.testing.assert_allclose(y[keep], x.numpy()[keep] / np.float32(p), rtol=1e-6)
    assert masks.apply(x, tf.constant(WORDS, tf.uint32), 0, 0.0) is x


def test_layer_ids_are_stable_names_of_the_block_not_of_the_model():
    assert masks.layer_id("unet/down0_res0/norm2") == masks.layer_id("unet_3/down0_res0/norm2")
    assert masks.layer_id("unet/down0_res0/norm2") != masks.layer_id("unet/down0_res1/norm2")


def layer_output(fused: bool, first_row: int, x, monkeypatch):
    monkeypatch.setenv("DDPM_TF_FUSED_KERNELS", "1" if fused else "0")
    layer = GroupNorm(groups=4, epsilon=1e-6, name="norm2")
    drop = keras.layers.Dropout(0.4, seed=1)
    with masks.rows(tf.constant([5, 6], tf.int32), first_row):
        return layer(x, silu=True, dropout=drop, training=True).numpy()


def test_the_layer_draws_the_same_masks_fused_and_with_the_switch_off(monkeypatch):
    x = tf.random.stateless_normal((4, 6, 6, 16), [7, 8]) + 3.0  # SiLU of it is never 0
    fused = layer_output(True, 0, x, monkeypatch)
    ops = layer_output(False, 0, x, monkeypatch)
    np.testing.assert_array_equal(fused == 0, ops == 0)
    assert 0.3 < (fused == 0).mean() < 0.5
    np.testing.assert_allclose(fused, ops, rtol=1e-5, atol=1e-5)
    shifted = layer_output(True, 2, x[2:], monkeypatch)
    np.testing.assert_array_equal(shifted == 0, fused[2:] == 0)


def test_rows_are_per_thread_and_nest():
    seed = tf.constant([1, 2], tf.int32)
    with masks.rows(seed, 4):
        with masks.rows(seed, 8):
            assert int(masks.layer_words("a/b", None)[1]) == 8
        assert int(masks.layer_words("a/b", None)[1]) == 4
    generator = keras.random.SeedGenerator(3)
    assert int(masks.layer_words("a/b", generator)[1]) == 0  # outside: the layer's own stream
