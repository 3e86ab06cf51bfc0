"""KL and decoder terms against closed forms and scipy."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from ddpm_tf import losses


def test_tfp_kl_equals_closed_form(np_rng):
    m1, m2 = np_rng.normal(size=(2, 1000))
    lv1, lv2 = np_rng.uniform(-12, 2, size=(2, 1000))
    closed = 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))
    got = losses.normal_kl(*(tf.constant(a) for a in (m1, lv1, m2, lv2))).numpy()
    np.testing.assert_allclose(got, closed, rtol=1e-9, atol=1e-12)
    assert np.all(losses.normal_kl(m1, lv1, m1, lv1).numpy() == pytest.approx(0.0, abs=1e-12))


BINS = np.arange(256) * (2.0 / 255) - 1.0


@pytest.mark.parametrize(
    "mean, log_scale",
    [
        (0.0, np.log(0.5)),
        (0.93, np.log(0.02)),
        (-1.7, np.log(0.3)),
        (0.4, np.log(1e-3)),
        (0.0, np.log(8.0)),
    ],
)
def test_discretized_likelihood_sums_to_one(mean, log_scale):
    for dtype in (tf.float64, tf.float32):
        x = tf.constant(BINS, dtype)
        logp = losses.discretized_gaussian_log_likelihood(
            x, tf.constant(mean, dtype), tf.constant(log_scale, dtype)
        ).numpy()
        assert np.all(np.isfinite(logp))
        assert np.exp(logp.astype(np.float64)).sum() == pytest.approx(
            1.0, abs=1e-5 if dtype == tf.float32 else 1e-12
        )


def test_discretized_likelihood_matches_scipy_including_far_tails():
    mean, scale = -0.95, 0.01
    x = tf.constant(BINS, tf.float64)
    got = losses.discretized_gaussian_log_likelihood(
        x, tf.constant(mean, tf.float64), tf.constant(np.log(scale), tf.float64)
    )
    lo = (BINS - 1 / 255 - mean) / scale
    hi = (BINS + 1 / 255 - mean) / scale
    # log(Phi(hi) - Phi(lo)) with log_ndtr in whichever tail is stable, in float64 scipy.
    right = lo > 0
    big = np.where(right, special.log_ndtr(-lo), special.log_ndtr(hi))
    small = np.where(right, special.log_ndtr(-hi), special.log_ndtr(lo))
    expected = big + np.log(-np.expm1(small - big))
    expected[0] = stats.norm.logcdf(hi[0])
    expected[-1] = stats.norm.logsf(lo[-1])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)
    assert got.numpy()[-1] < -1e4  # 195 standard deviations away, yet finite


def test_discretized_likelihood_is_stable_in_float32_tails():
    x = tf.constant(BINS, tf.float32)
    logp = losses.discretized_gaussian_log_likelihood(
        x, tf.constant(-1.0), tf.constant(np.log(1e-3), tf.float32)
    )
    assert np.all(np.isfinite(logp.numpy()))
    assert np.all(
        np.diff(logp.numpy()[1:]) < 0
    )  # farther bins are strictly less likely, no flat log(0)
