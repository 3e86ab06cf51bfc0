"""epsilon / x_start / v / score describe the same reverse step; variance types and VLB terms."""

import math

import numpy as np
import pytest
import tensorflow as tf
from oracle import optimal_eps, true_score

from ddpm_tf import GaussianDiffusion, get_beta_schedule

T = 1000
BETAS = get_beta_schedule("linear", T)
AB = np.cumprod(1 - BETAS)


def _batch(np_rng, t_values):
    b = len(t_values)
    x0 = np_rng.uniform(-0.9, 0.9, (b, 3, 3, 2))
    eps = np_rng.normal(size=x0.shape)
    ab = AB[t_values].reshape(-1, 1, 1, 1)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    return x0, eps, xt, np.asarray(t_values, np.int32)


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned", "learned_range"])
def test_three_mean_parameterizations_agree(np_rng, var_type):
    x0, eps, xt, t = _batch(np_rng, [0, 1, 10, 400, 999])
    ab = AB[t].reshape(-1, 1, 1, 1)
    v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0
    var_part = np_rng.uniform(-1, 1, x0.shape)
    outputs = {"epsilon": eps, "x_start": x0, "v": v}
    results = {}
    for mean_type, out in outputs.items():
        d = GaussianDiffusion(BETAS, mean_type, var_type, dtype="float64")
        if d.learns_variance:
            out = np.concatenate([out, var_part], axis=-1)
        results[mean_type] = d.p_mean_variance(out, xt, t, clip_denoised=False)
    for mean_type in ("x_start", "v"):
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            np.testing.assert_allclose(
                results[mean_type][key], results["epsilon"][key], rtol=1e-8, atol=1e-10
            )
    np.testing.assert_allclose(results["epsilon"]["pred_xstart"], x0, atol=1e-8)


def test_variance_types_follow_the_reference_conventions(np_rng):
    x0, eps, xt, t = _batch(np_rng, [0, 1, 500, 999])
    ab_prev = np.append(1.0, AB[:-1])
    post = BETAS * (1 - ab_prev) / (1 - AB)
    expected = {
        "fixed_small": np.log(np.append(post[1], post[1:]))[t],
        "fixed_large": np.log(np.append(post[1], BETAS[1:]))[t],
    }
    for var_type, log_var in expected.items():
        d = GaussianDiffusion(BETAS, "epsilon", var_type, dtype="float64")
        got = d.p_mean_variance(eps, xt, t)["log_variance"].numpy()[:, 0, 0, 0]
        np.testing.assert_allclose(got, log_var, rtol=1e-12)
    # learned_range: v = -1 -> clipped posterior log-variance, v = 1 -> log beta, v = 0 halfway in log space.
    d = GaussianDiffusion(BETAS, "epsilon", "learned_range", dtype="float64")
    lo, hi = expected["fixed_small"], np.log(BETAS[t])
    for v, want in ((-1.0, lo), (1.0, hi), (0.0, (lo + hi) / 2)):
        out = np.concatenate([eps, np.full_like(eps, v)], axis=-1)
        got = d.p_mean_variance(out, xt, t)["log_variance"].numpy()[:, 0, 0, 0]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    d = GaussianDiffusion(BETAS, "epsilon", "learned", dtype="float64")
    out = np.concatenate([eps, np.full_like(eps, -3.5)], axis=-1)
    assert np.allclose(d.p_mean_variance(out, xt, t)["variance"].numpy(), math.exp(-3.5))


def test_clipping_applies_to_the_x0_prediction():
    d = GaussianDiffusion(BETAS, "x_start", dtype="float64")
    xt = np.zeros((1, 1, 1, 1))
    out = d.p_mean_variance(np.full((1, 1, 1, 1), 3.0), xt, [5], clip_denoised=True)
    assert out["pred_xstart"].numpy().item() == 1.0
    coef1 = np.sqrt(np.append(1.0, AB[:-1])[5]) * BETAS[5] / (1 - AB[5])
    assert out["mean"].numpy().item() == pytest.approx(coef1)


def test_score_conversion_matches_the_analytic_score_of_gaussian_data(np_rng):
    mu, s = 0.1, 0.4
    t = np.array([0, 5, 300, 999], np.int32)
    xt = np_rng.normal(size=(4, 1, 1, 1))
    ab = AB[t].reshape(-1, 1, 1, 1)
    d = GaussianDiffusion(BETAS, dtype="float64")
    score = d.score_from_eps(tf.constant(optimal_eps(xt, ab, mu, s)), t).numpy()
    np.testing.assert_allclose(score, true_score(xt, ab, mu, s), rtol=1e-9)
    np.testing.assert_allclose(
        d.eps_from_score(score, t).numpy(), optimal_eps(xt, ab, mu, s), rtol=1e-9
    )


def test_vb_term_equals_an_independent_numpy_kl(np_rng):
    x0, eps, xt, t = _batch(np_rng, [1, 7, 250, 999])
    model_eps = eps + 0.1 * np_rng.normal(size=eps.shape)
    d = GaussianDiffusion(BETAS, "epsilon", "fixed_large", dtype="float64")
    got = d.vb_terms_bpd(model_eps, x0, xt, t, clip_denoised=False).numpy()
    ab = AB[t].reshape(-1, 1, 1, 1)
    ab_prev = np.append(1.0, AB[:-1])[t].reshape(-1, 1, 1, 1)
    beta = BETAS[t].reshape(-1, 1, 1, 1)
    c1, c2 = np.sqrt(ab_prev) * beta / (1 - ab), np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
    true_mean, true_var = c1 * x0 + c2 * xt, beta * (1 - ab_prev) / (1 - ab)
    model_mean = c1 * (xt - np.sqrt(1 - ab) * model_eps) / np.sqrt(ab) + c2 * xt
    model_var = beta  # fixed_large for t >= 1
    kl = 0.5 * (
        np.log(model_var / true_var) + (true_var + (true_mean - model_mean) ** 2) / model_var - 1
    )
    np.testing.assert_allclose(got, kl.mean(axis=(1, 2, 3)) / np.log(2), rtol=1e-8)


def test_prior_bpd_is_the_closed_form_kl_to_standard_normal():
    x0 = np.linspace(-1, 1, 8).reshape(2, 2, 2, 1)
    d = GaussianDiffusion(BETAS, dtype="float64")
    m, v = np.sqrt(AB[-1]) * x0, 1 - AB[-1]
    kl = 0.5 * (-1 - np.log(v) + v + m**2)
    np.testing.assert_allclose(
        d.prior_bpd(x0).numpy(), kl.mean(axis=(1, 2, 3)) / np.log(2), rtol=1e-8
    )


def test_decoder_term_at_t0_uses_the_discretized_likelihood():
    """With a perfect x0 prediction and the t=0 variance, L_0 is -log2 of the mass of x0's own bin."""
    from scipy.stats import norm

    d = GaussianDiffusion(BETAS, "x_start", "fixed_small", dtype="float64")
    x0 = np.array([-1.0, 1 - 2 / 255, 0.2 - 0.2 % (2 / 255) - 1 + 1]).reshape(3, 1, 1, 1)
    x0 = np.round((x0 + 1) * 127.5) / 127.5 - 1
    got = d.vb_terms_bpd(x0, x0, x0, [0, 0, 0]).numpy()
    sd = np.sqrt(d.posterior_variance[1])
    c = x0.ravel()
    mass = norm.cdf(c + 1 / 255, c, sd) - norm.cdf(c - 1 / 255, c, sd)
    mass[0] = norm.cdf(c[0] + 1 / 255, c[0], sd)  # the first bin is open to -inf
    np.testing.assert_allclose(got, -np.log2(mass), rtol=1e-9)
