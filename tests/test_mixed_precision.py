"""Mixed precision training on CPU (mixed_float16 with loss scaling, mixed_bfloat16 without):
float32 weights, head and math, and a loss that falls as float32 training's does.

Each policy trains `tiny_8` for 60 steps on 16 fixed images from the same seed; the loss of every
10 steps must fall below half that of the first 10 (the network learns: a zeroed gradient, or a
loss-scaled gradient clipped as if it were unscaled, fails this) and stay within 15% of float32's
(measured on the Intel Xeon: within 4.8% for float16 and 2.7% for bfloat16, 10 steps being
0.62 -> 0.11 in float32).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import weight_distance

from ddpm_tf import DiffusionModel, GaussianDiffusion, from_preset, get_beta_schedule

T = 50
EPOCHS, STEPS_PER_EPOCH = 6, 10
RTOL = 0.15


def images() -> np.ndarray:
    """16 fixed 8x8 images of 4x4 blocks: a training set tiny_8 learns in a few dozen steps."""
    coarse = np.random.default_rng(0).uniform(-1, 1, (16, 2, 2, 1))
    return np.kron(coarse, np.ones((1, 4, 4, 1))).astype("float32")


def fit(policy: str) -> tuple[DiffusionModel, np.ndarray, list]:
    """(the model, its mean loss per 10 steps, its initial weights) after training under `policy`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = DiffusionModel(
            from_preset("tiny_8"), GaussianDiffusion(get_beta_schedule("linear", T)), seed=1
        )
        model.compile(keras.optimizers.Adam(2e-3))
        init = model.network.get_weights()
        data = tf.data.Dataset.from_tensor_slices(images()).repeat().batch(16)
        history = model.fit(data, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, np.array(history.history["loss"]), init


def assert_learns(losses: np.ndarray) -> None:
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture(scope="module")
def float32_run():
    return fit("float32")


def test_float32_training_learns(float32_run):
    _, losses, _ = float32_run
    assert_learns(losses)


@pytest.mark.parametrize(
    "policy, compute_dtype, loss_scaled",
    [("mixed_float16", "float16", True), ("mixed_bfloat16", "bfloat16", False)],
)
def test_mixed_precision_learns_like_float32(float32_run, policy, compute_dtype, loss_scaled):
    model, losses, init = fit(policy)
    _, reference, ref_init = float32_run
    # bfloat16 has float32's range, so it needs no loss scaling
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is loss_scaled
    assert model.network.compute_dtype == compute_dtype
    assert all(w.dtype == "float32" for w in model.network.weights)  # float32 master weights
    out = model.network([tf.zeros((2, 8, 8, 1)), tf.constant([0, T - 1])])
    assert out.dtype == tf.float32  # the float32 head feeds float32 diffusion math
    assert weight_distance(init, ref_init) < 1e-6  # same initial weights in both runs
    assert_learns(losses)
    np.testing.assert_allclose(losses, reference, rtol=RTOL)
    samples = model.generate(2, seed=0, method="ddim", steps=5)
    assert samples.dtype == tf.float32 and np.all(np.isfinite(samples.numpy()))
