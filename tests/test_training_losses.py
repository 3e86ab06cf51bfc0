"""training_losses for every loss type against direct computations."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import GaussianDiffusion, get_beta_schedule

T = 100
BETAS = get_beta_schedule("linear", T)
AB = np.cumprod(1 - BETAS)


def _inputs(np_rng):
    x0 = np_rng.uniform(-1, 1, (4, 4, 4, 3)).astype(np.float32)
    noise = np_rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 3, 50, 99], np.int32)
    return x0, noise, t


@pytest.mark.parametrize("mean_type", ["epsilon", "x_start", "v"])
def test_mse_targets(np_rng, mean_type):
    x0, noise, t = _inputs(np_rng)
    ab = AB[t].reshape(-1, 1, 1, 1)
    target = {"epsilon": noise, "x_start": x0, "v": np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0}[
        mean_type
    ]
    d = GaussianDiffusion(BETAS, mean_type, dtype="float64")
    half = lambda x_t, t: 0.5 * x_t
    terms = d.training_losses(half, x0, t, noise=noise)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    expected = ((target - 0.5 * x_t) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(terms["mse"].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-6)
    assert "vb" not in terms
    perfect = lambda x_t, t: tf.constant(target, x_t.dtype)
    assert np.allclose(
        d.training_losses(perfect, x0, t, noise=noise)["mse"].numpy(), 0.0, atol=1e-10
    )


@pytest.mark.parametrize("loss_type, vb_scale", [("mse", 1.0), ("rescaled_mse", T / 1000.0)])
def test_hybrid_loss_stops_the_vb_gradient_at_the_mean(np_rng, loss_type, vb_scale):
    x0, noise, t = _inputs(np_rng)
    d = GaussianDiffusion(BETAS, "epsilon", "learned_range", loss_type)
    a, b = tf.Variable(0.3), tf.Variable(0.1)
    fn = lambda x_t, t: tf.concat([a * x_t, b * tf.ones_like(x_t)], axis=-1)
    with tf.GradientTape(persistent=True) as tape:
        terms = d.training_losses(fn, x0, t, noise=noise)
        vb_sum = tf.reduce_sum(terms["vb"])
    grad_mean = tape.gradient(vb_sum, a)  # the vb term reaches only the variance
    assert grad_mean is None or float(grad_mean) == 0.0
    assert abs(float(tape.gradient(vb_sum, b))) > 0
    x_t = d.q_sample(x0, t, noise)
    direct = d.vb_terms_bpd(fn(x_t, t), x0, x_t, t, clip_denoised=False)
    np.testing.assert_allclose(terms["vb"].numpy(), vb_scale * direct.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        terms["loss"].numpy(), (terms["mse"] + terms["vb"]).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("loss_type, scale", [("kl", 1.0), ("rescaled_kl", float(T))])
def test_kl_losses_are_the_bound_term(np_rng, loss_type, scale):
    x0, noise, t = _inputs(np_rng)
    x0 = np.round((x0 + 1) * 127.5) / 127.5 - 1
    d = GaussianDiffusion(BETAS, "epsilon", "learned", loss_type)
    fn = lambda x_t, t: tf.concat([0.2 * x_t, tf.fill(tf.shape(x_t), -4.0)], axis=-1)
    terms = d.training_losses(fn, x0, t, noise=noise)
    x_t = d.q_sample(x0, t, noise)
    direct = d.vb_terms_bpd(fn(x_t, t), x0, x_t, t, clip_denoised=False).numpy()
    np.testing.assert_allclose(terms["loss"].numpy(), scale * direct, rtol=1e-6)
    assert set(terms) == {"loss", "vb"}


def test_seeded_noise_is_reproducible(np_rng):
    x0, _, t = _inputs(np_rng)
    d = GaussianDiffusion(BETAS)
    fn = lambda x_t, t: x_t
    a = d.training_losses(fn, x0, t, seed=3)["loss"].numpy()
    b = d.training_losses(fn, x0, t, seed=3)["loss"].numpy()
    c = d.training_losses(fn, x0, t, seed=4)["loss"].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("mean_type", ["epsilon", "x_start", "v"])
@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_weighting_is_the_clipped_snr_times_the_x0_error(np_rng, mean_type, gamma):
    """Hang et al.: the loss is min(SNR_t, gamma) * mean (x_0 - x_0_hat)^2 for every parameterization,
    with x_0_hat recovered from the network output by the parameterization's own inversion."""
    x0, noise, t = _inputs(np_rng)
    output = np_rng.normal(size=x0.shape)
    ab = AB[t].reshape(-1, 1, 1, 1)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    x0_hat = {
        "epsilon": (x_t - np.sqrt(1 - ab) * output) / np.sqrt(ab),
        "x_start": output,
        "v": np.sqrt(ab) * x_t - np.sqrt(1 - ab) * output,
    }[mean_type]
    snr = AB[t] / (1 - AB[t])
    expected = np.minimum(snr, gamma) * ((x0 - x0_hat) ** 2).mean(axis=(1, 2, 3))
    d = GaussianDiffusion(BETAS, mean_type, min_snr_gamma=gamma, dtype="float64")
    terms = d.training_losses(lambda x, t: tf.constant(output), x0, t, noise=noise)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-9)
    unweighted = GaussianDiffusion(BETAS, mean_type, dtype="float64")
    plain = unweighted.training_losses(lambda x, t: tf.constant(output), x0, t, noise=noise)
    np.testing.assert_allclose(terms["mse"].numpy(), plain["mse"].numpy(), rtol=1e-12)
    respaced = d.respace(range(0, T, 10))
    assert respaced.min_snr_gamma == gamma
    np.testing.assert_allclose(
        respaced.mse_weights, d.mse_weights[respaced.timestep_map], rtol=1e-12
    )


def test_min_snr_gamma_is_checked():
    with pytest.raises(ValueError, match="min_snr_gamma"):
        GaussianDiffusion(BETAS, min_snr_gamma=-1.0)
    with pytest.raises(ValueError, match="mse term"):
        GaussianDiffusion(BETAS, loss_type="kl", min_snr_gamma=5.0)
    rebuilt = GaussianDiffusion.from_config(
        GaussianDiffusion(BETAS, min_snr_gamma=5.0).get_config()
    )
    assert rebuilt.min_snr_gamma == 5.0
