"""Mixed precision training on CPU (mixed_float16 with loss scaling, mixed_bfloat16 without):
float32 weights, head and math, losses close to float32 training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import weight_distance

from ddpm_tf import DiffusionModel, GaussianDiffusion, from_preset, get_beta_schedule


def _fit(steps=6):
    keras.utils.set_random_seed(0)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000)[:100])
    model = DiffusionModel(from_preset("tiny_8"), diffusion, seed=1)
    model.compile(keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(-1, 1, (8 * steps, 8, 8, 1)).astype("float32")
    init = model.network.get_weights()
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), verbose=0).history
    return model, history, init


@pytest.fixture(scope="module")
def float32_run():
    return _fit()


def test_mixed_float16_trains_close_to_float32(float32_run, mixed_precision):
    model, history, init = _fit()
    _, reference, ref_init = float32_run
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.network.compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in model.network.weights)  # float32 master weights
    out = model.network([tf.zeros((2, 8, 8, 1)), tf.constant([0, 99])])
    assert out.dtype == tf.float32  # the float32 head feeds float32 diffusion math
    assert weight_distance(init, ref_init) < 1e-6  # same initial weights in both runs
    losses, ref = np.array(history["loss"]), np.array(reference["loss"])
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, ref, rtol=0.02)
    assert weight_distance(init, model.network.get_weights()) > 1e-3  # steps were not all skipped
    samples = model.generate(2, seed=0, method="ddim", steps=5)
    assert samples.dtype == tf.float32 and np.all(np.isfinite(samples.numpy()))


def test_mixed_bfloat16_trains_close_to_float32(float32_run):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, history, init = _fit()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _, reference, ref_init = float32_run
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # bf16's range
    assert model.network.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.network.weights)
    out = model.network([tf.zeros((2, 8, 8, 1)), tf.constant([0, 99])])
    assert out.dtype == tf.float32
    assert weight_distance(init, ref_init) < 1e-6
    losses, ref = np.array(history["loss"]), np.array(reference["loss"])
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, ref, rtol=0.05)  # 8 mantissa bits against float16's 11
    assert weight_distance(init, model.network.get_weights()) > 1e-3
    samples = model.generate(2, seed=0, method="ddim", steps=5)
    assert samples.dtype == tf.float32 and np.all(np.isfinite(samples.numpy()))
