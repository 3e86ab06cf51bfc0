"""The forward process and its posterior against independent computations."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import GaussianDiffusion, get_beta_schedule

T = 200


@pytest.fixture(scope="module")
def diffusion64():
    return GaussianDiffusion(get_beta_schedule("linear", T), dtype="float64")


def _item(x) -> float:
    return x.numpy().item()


def _scalar_images(values):
    return tf.constant(np.asarray(values, np.float64).reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("t", [0, 1, 57, T - 1])
def test_closed_form_equals_t_composed_single_steps(diffusion64, t):
    betas = diffusion64.betas
    x0 = 0.7
    # Deterministic composition of the moments of t+1 single steps q(x_i | x_{i-1}).
    mean, var = x0, 0.0
    for beta in betas[: t + 1]:
        mean, var = np.sqrt(1 - beta) * mean, (1 - beta) * var + beta
    m, v, logv = diffusion64.q_mean_variance(_scalar_images([x0]), [t])
    assert _item(m) == pytest.approx(mean, rel=1e-12)
    assert _item(v) == pytest.approx(var, rel=1e-12)
    assert _item(logv) == pytest.approx(np.log(var), rel=1e-10)

    # Monte Carlo of the same chain against q_sample's samples.
    rng = np.random.default_rng(t)
    n = 200_000
    x = np.full(n, x0)
    for beta in betas[: t + 1]:
        x = np.sqrt(1 - beta) * x + np.sqrt(beta) * rng.standard_normal(n)
    direct = diffusion64.q_sample(_scalar_images(np.full(n, x0)), np.full(n, t), seed=t).numpy()
    se_mean = np.sqrt(var / n)
    assert abs(x.mean() - direct.mean()) < 6 * se_mean
    assert abs(x.std() - direct.std()) < 6 * np.sqrt(var / (2 * n)) + 1e-12


@pytest.mark.parametrize("t", [1, 2, 30, T - 1])
def test_posterior_equals_bayes_on_a_grid(diffusion64, t):
    betas = diffusion64.betas
    ab = np.cumprod(1 - betas)
    x0, xt = 0.3, -0.4
    # Prior q(x_{t-1} | x_0) and likelihood q(x_t | x_{t-1}) on a fine grid: brute-force Bayes.
    prior_mean, prior_var = np.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]
    grid = np.linspace(-4.0, 4.0, 800_001)
    log_post = -0.5 * (grid - prior_mean) ** 2 / prior_var
    log_post += -0.5 * (xt - np.sqrt(1 - betas[t]) * grid) ** 2 / betas[t]
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    bayes_mean = np.sum(w * grid)
    bayes_var = np.sum(w * (grid - bayes_mean) ** 2)
    mean, var, logvar = diffusion64.q_posterior_mean_variance(
        _scalar_images([x0]), _scalar_images([xt]), [t]
    )
    assert _item(mean) == pytest.approx(bayes_mean, rel=1e-7, abs=1e-10)
    assert _item(var) == pytest.approx(bayes_var, rel=1e-6)
    assert _item(logvar) == pytest.approx(np.log(bayes_var), rel=1e-6)


def test_posterior_at_t0_is_x0_and_log_variance_clipped(diffusion64):
    mean, var, logvar = diffusion64.q_posterior_mean_variance(
        _scalar_images([0.25]), _scalar_images([3.0]), [0]
    )
    assert _item(mean) == pytest.approx(0.25, rel=1e-12)
    assert _item(var) == 0.0
    assert _item(logvar) == pytest.approx(np.log(diffusion64.posterior_variance[1]))


def test_float32_tables_agree_with_float64():
    d32 = GaussianDiffusion(get_beta_schedule("cosine", 1000))
    d64 = GaussianDiffusion(get_beta_schedule("cosine", 1000), dtype="float64")
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4, 4, 3))
    t = [0, 1, 500, 998, 999]
    m32, _, lv32 = d32.q_mean_variance(x, t)
    m64, _, lv64 = d64.q_mean_variance(x, t)
    assert m32.dtype == tf.float32
    np.testing.assert_allclose(m32.numpy(), m64.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lv32.numpy(), lv64.numpy(), rtol=1e-6)
