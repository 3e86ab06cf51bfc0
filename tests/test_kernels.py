"""The fused GroupNorm kernel (ddpm_tf.kernels) against float64 references, and where it is used."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import kernels
from ddpm_tf.kernels import build
from ddpm_tf.layers import GroupNorm

# Without a compiler the layers fall back to TensorFlow's ops (tested below); with one, a library
# that does not build or load fails these tests.
pytestmark = pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler")

# Relative error bounds: float32 arithmetic, or the rounding of the 16-bit input and output.
TOLERANCE = {"float32": 2e-6, "float16": 2e-3, "bfloat16": 1.5e-2}


def reference(x, scale, offset, groups: int, eps: float, silu: bool):
    """act(GroupNorm(x) * scale + offset) in float64 TF ops, per sample over middle axes."""
    n, c = x.shape[0], x.shape[-1]
    grouped = tf.reshape(x, (n, -1, groups, c // groups))
    mean, var = tf.nn.moments(grouped, axes=[1, 3], keepdims=True)
    xhat = tf.reshape((grouped - mean) / tf.sqrt(var + eps), tf.shape(x))
    bcast = (n,) + (1,) * (len(x.shape) - 2) + (c,)
    y = xhat * tf.reshape(scale, bcast) + tf.reshape(offset, bcast)
    return y * tf.sigmoid(y) if silu else y


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    n, c = shape[0], shape[-1]
    x = rng.normal(1.5, 3.0, shape)  # a mean far from 0 tests the variance's cancellation
    return x, rng.normal(1.0, 0.5, (n, c)), rng.normal(0.0, 0.5, (n, c)), rng.normal(size=shape)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("shape,groups", [((3, 5, 7, 32), 8), ((2, 300, 12), 3), ((4, 2, 2, 6), 6)])
def test_forward_and_gradients_match_float64(dtype, silu, shape, groups):
    x, scale, offset, weight = inputs(shape)
    x_in = tf.cast(tf.constant(x, tf.float32), dtype)
    scale32, offset32 = tf.constant(scale, tf.float32), tf.constant(offset, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([x_in, scale32, offset32])
        y = kernels.group_norm(x_in, scale32, offset32, groups, 1e-6, silu)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
    grads = tape.gradient(loss, [x_in, scale32, offset32])

    x64 = tf.cast(x_in, tf.float64)  # the 16-bit input exactly
    s64, o64 = tf.constant(scale), tf.constant(offset)
    with tf.GradientTape() as tape:
        tape.watch([x64, s64, o64])
        y_ref = reference(x64, s64, o64, groups, 1e-6, silu)
        loss_ref = tf.reduce_sum(y_ref * weight)
    grads_ref = tape.gradient(loss_ref, [x64, s64, o64])

    assert y.dtype == x_in.dtype and y.shape == shape
    tol = TOLERANCE[dtype]
    assert relative_error(tf.cast(y, tf.float64), y_ref) < tol
    for got, want in zip(grads, grads_ref, strict=True):
        assert relative_error(tf.cast(got, tf.float64), want) < 2 * tol


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_saved_mean_and_rstd_match_float64(dtype):
    """The statistics the forward pass saves for the gradient, [N, G] float32: the mean and
    1 / sqrt(var + eps) of each (sample, group) of the 16-bit input as given."""
    shape, groups, eps = (3, 5, 7, 32), 8, 1e-6
    x, scale, offset, _ = inputs(shape)
    x_in = tf.cast(tf.constant(x, tf.float32), dtype)
    _, mean, rstd = kernels._library().ddpm_group_norm(
        x_in,
        tf.constant(scale, tf.float32),
        tf.constant(offset, tf.float32),
        tf.zeros([3], tf.int64),
        groups=groups,
        epsilon=eps,
        silu=False,
        dropout=0.0,
    )
    grouped = tf.reshape(tf.cast(x_in, tf.float64), (shape[0], -1, groups, shape[-1] // groups))
    mean64, var64 = tf.nn.moments(grouped, axes=[1, 3])
    assert mean.dtype == rstd.dtype == tf.float32 and mean.shape == (shape[0], groups)
    assert relative_error(mean, mean64) < 1e-6
    assert relative_error(rstd, 1 / tf.sqrt(var64 + eps)) < 1e-6


def test_results_are_bit_identical_from_call_to_call():
    x, scale, offset, _ = inputs((16, 9, 9, 64), seed=3)
    args = [tf.constant(v, tf.float32) for v in (x, scale, offset)]

    def step():
        with tf.GradientTape() as tape:
            tape.watch(args)
            y = kernels.group_norm(*args, 32, 1e-6, True)
        return [y, *tape.gradient(y, args)]

    first, second = step(), step()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_shapes_are_refused_with_the_reason():
    x = tf.zeros((2, 4, 4, 6))
    per_channel = tf.ones((2, 6))
    with pytest.raises(tf.errors.InvalidArgumentError, match="groups=4 does not divide the 6"):
        kernels.group_norm(x, per_channel, per_channel, 4, 1e-6, False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be \[batch, channels\]"):
        kernels.group_norm(x, tf.ones((1, 6)), per_channel, 3, 1e-6, False)


def layer_and_inputs(dtype="float32"):
    layer = GroupNorm(groups=4, epsilon=1e-6, dtype=dtype)
    layer.build((None, 6, 6, 16))
    rng = np.random.default_rng(5)
    layer.set_weights([rng.normal(1, 0.3, 16), rng.normal(0, 0.3, 16)])
    x = tf.constant(rng.normal(size=(3, 6, 6, 16)), tf.float32)
    scale = tf.constant(rng.normal(0, 0.5, (3, 1, 1, 16)), tf.float32)
    shift = tf.constant(rng.normal(0, 0.5, (3, 1, 1, 16)), tf.float32)
    return layer, x, scale, shift


def graph_ops(fn, *args) -> set[str]:
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize("conditioned", [False, True])
def test_layer_fused_and_reference_paths_agree(conditioned):
    layer, x, scale, shift = layer_and_inputs()
    extra = {"scale": scale, "shift": shift} if conditioned else {}

    def run():
        with tf.GradientTape() as tape:
            tape.watch([x, scale, shift])
            y = layer(x, silu=True, **extra)
            loss = tf.reduce_sum(y * tf.range(1.0, 1.0 + y.shape[-1]))
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    fused = run()
    with kernels.reference_only():
        ref = run()
    for a, b in zip(fused, ref, strict=True):
        assert relative_error(a, b) < 1e-5
    assert "DdpmGroupNorm" in graph_ops(lambda v: layer(v, silu=True, **extra), x)


def test_layer_keeps_standard_ops_under_xla_exports_and_the_switch(monkeypatch):
    layer, x, _, _ = layer_and_inputs()
    with kernels.reference_only():
        assert "DdpmGroupNorm" not in graph_ops(lambda v: layer(v), x)
        want = layer(x, silu=True).numpy()
    compiled = tf.function(lambda v: layer(v, silu=True), jit_compile=True)
    ops = {op.type for op in compiled.get_concrete_function(x).graph.get_operations()}
    assert "DdpmGroupNorm" not in ops
    np.testing.assert_allclose(compiled(x).numpy(), want, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv(kernels.ENV_SWITCH, "off")
    assert not kernels.active() and "off" in kernels.status()
    assert "DdpmGroupNorm" not in graph_ops(lambda v: layer(v), x)
    monkeypatch.setenv(kernels.ENV_SWITCH, "maybe")
    with pytest.raises(ValueError, match="DDPM_TF_FUSED_KERNELS='maybe' is not a switch"):
        kernels.active()


def test_layer_under_bfloat16_returns_bfloat16_close_to_float32():
    layer32, x, scale, shift = layer_and_inputs()
    layer16 = GroupNorm(groups=4, epsilon=1e-6, dtype="mixed_bfloat16")
    layer16.build((None, 6, 6, 16))
    layer16.set_weights(layer32.get_weights())
    y16 = layer16(x, scale=scale, shift=shift, silu=True)
    assert y16.dtype == tf.bfloat16
    assert (
        relative_error(tf.cast(y16, tf.float32), layer32(x, scale=scale, shift=shift, silu=True))
        < 1e-2
    )


def test_layer_refuses_half_a_conditioning():
    layer, x, scale, _ = layer_and_inputs()
    with pytest.raises(ValueError, match="pass both `scale` and `shift`"):
        layer(x, scale=scale)


def dropout_outputs(rate, seed, shape=(64, 16, 16, 32)):
    x, scale, offset, _ = inputs(shape, seed=7)
    args = [tf.constant(v, tf.float32) for v in (x, scale, offset)]
    return kernels.group_norm(*args, 8, 1e-6, False, rate, tf.constant(seed, tf.int64)).numpy()


def test_dropout_keeps_one_minus_rate_independently_and_scales_the_kept():
    rate, shape = 0.3, (64, 16, 16, 32)
    x, scale, offset, _ = inputs(shape, seed=7)
    plain = kernels.group_norm(
        *[tf.constant(v, tf.float32) for v in (x, scale, offset)], 8, 1e-6, False
    )
    dropped = dropout_outputs(rate, [3, 4, 0])
    kept = dropped != 0
    n, p = kept.size, 1 - rate
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * rate / n)
    np.testing.assert_allclose(dropped[kept], plain.numpy()[kept] / p, rtol=1e-6)
    agree = p**2 + rate**2  # two independent masks agree this often
    other_seed = dropout_outputs(rate, [3, 5, 0]) != 0
    other_sample = np.roll(kept, 1, axis=0)
    neighbour = np.roll(kept, 1, axis=-1)
    for other in (other_seed, other_sample, neighbour):
        assert abs((kept == other).mean() - agree) < 5 * np.sqrt(agree * (1 - agree) / n)
    np.testing.assert_array_equal(dropout_outputs(rate, [3, 4, 0]), dropped)  # a seed is a mask


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_dropout_gradient_uses_the_forward_mask(dtype):
    rate, shape = 0.25, (4, 6, 6, 16)
    x, scale, offset, weight = inputs(shape, seed=2)
    x_in = tf.cast(tf.constant(x, tf.float32), dtype)
    args = [x_in, tf.constant(scale, tf.float32), tf.constant(offset, tf.float32)]
    seed = tf.constant([11, 0, 0], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = kernels.group_norm(*args, 4, 1e-6, True, rate, seed)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
    grads = tape.gradient(loss, args)
    # The mask is read off the output (SiLU is never exactly 0 here, even rounded to 16 bits);
    # the rest is float64 of the input as given.
    mask = (tf.cast(y, tf.float32).numpy() != 0) / (1 - rate)
    assert abs((mask == 0).mean() - rate) < 0.05
    x64, s64, o64 = tf.cast(x_in, tf.float64), tf.constant(scale), tf.constant(offset)
    with tf.GradientTape() as tape:
        tape.watch([x64, s64, o64])
        loss_ref = tf.reduce_sum(reference(x64, s64, o64, 4, 1e-6, True) * mask * weight)
    tol = max(1e-5, 2 * TOLERANCE[dtype])
    for got, want in zip(grads, tape.gradient(loss_ref, [x64, s64, o64]), strict=True):
        assert relative_error(tf.cast(got, tf.float64), want) < tol


def test_dropout_arguments_are_checked():
    x, per_channel = tf.zeros((2, 4, 4, 6)), tf.ones((2, 6))
    with pytest.raises(ValueError, match="needs a `seed`"):
        kernels.group_norm(x, per_channel, per_channel, 3, 1e-6, False, 0.1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"dropout must be in \[0, 1\)"):
        kernels.group_norm(
            x, per_channel, per_channel, 3, 1e-6, False, 1.0, tf.zeros([3], tf.int64)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="seed must be"):
        kernels.group_norm(
            x, per_channel, per_channel, 3, 1e-6, False, 0.1, tf.zeros([2], tf.int64)
        )


def test_layer_fuses_dropout_only_in_training():
    layer, x, scale, shift = layer_and_inputs()
    drop = keras.layers.Dropout(0.5, seed=1)
    inference = layer(x, silu=True, dropout=drop, training=False)
    np.testing.assert_array_equal(inference, layer(x, silu=True))
    first = layer(x, silu=True, dropout=drop, training=True).numpy()
    second = layer(x, silu=True, dropout=drop, training=True).numpy()
    zeros = first == 0
    assert 0.4 < zeros.mean() < 0.6 and not np.array_equal(zeros, second == 0)  # a new mask
    np.testing.assert_allclose(first[~zeros], 2 * inference.numpy()[~zeros], rtol=1e-6)
    fn = lambda v: layer(v, silu=True, dropout=drop, training=True)  # noqa: E731
    assert "DdpmGroupNorm" in graph_ops(fn, x) and "StatelessRandomUniformV2" not in graph_ops(
        fn, x
    )


THREADS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
tf.config.threading.set_inter_op_parallelism_threads(1)
from ddpm_tf import kernels
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(1.0, 2.0, (6, 10, 10, 32)), tf.float32)
scale = tf.constant(rng.normal(1.0, 0.5, (6, 32)), tf.float32)
offset = tf.constant(rng.normal(0.0, 0.5, (6, 32)), tf.float32)
with tf.GradientTape() as tape:
    tape.watch([x, scale, offset])
    y = kernels.group_norm(x, scale, offset, 8, 1e-6, True, 0.2, tf.constant([5, 6, 0], tf.int64))
    loss = tf.reduce_sum(y * tf.cos(x))
grads = tape.gradient(loss, [x, scale, offset])
np.savez(sys.argv[2], *[t.numpy() for t in (y, *grads)])
"""


def test_results_do_not_depend_on_the_number_of_threads(tmp_path):
    """Work is split by sample with a fixed order inside each, so 1 and 4 threads give equal bits."""
    results = []
    for threads in (1, 4):
        out = tmp_path / f"{threads}.npz"
        done = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, str(threads), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with np.load(out) as arrays:
            results.append([arrays[k] for k in sorted(arrays.files)])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
