"""DPM-Solver++: its coefficients, its order of convergence on the probability-flow ODE, DDIM as its
first-order form, log-SNR spacing and dynamic thresholding, each against an independent computation.

For Gaussian data x_0 ~ N(mu, s^2), the probability-flow ODE keeps the standardized value
(x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) of every trajectory constant, so its exact
solution between any two times is a closed form; the exact denoiser is `oracle.optimal_xstart`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from oracle import eps_denoiser, optimal_xstart

from ddpm_tf import GaussianDiffusion, SamplingSpec, UniformSteps, get_beta_schedule
from ddpm_tf.diffusion import bound_xstart
from ddpm_tf.sampling import run_loop
from ddpm_tf.sampling.dpm_solver import multistep_tables
from ddpm_tf.spacing import LogSNRSteps, half_log_snr

MU, S = 0.2, 0.3
T = 1000


@pytest.fixture(scope="module")
def process64() -> GaussianDiffusion:
    return GaussianDiffusion(get_beta_schedule("linear", T), dtype="float64")


def _ode_solution(x_start_noise, ab_from, ab_to):
    """The probability-flow ODE's exact map from abar = ab_from to abar = ab_to, Gaussian data."""
    z = (x_start_noise - math.sqrt(ab_from) * MU) / math.sqrt(ab_from * S**2 + 1 - ab_from)
    return math.sqrt(ab_to) * MU + math.sqrt(ab_to * S**2 + 1 - ab_to) * z


def test_tables_match_the_update_written_out_step_by_step():
    ab = np.cumprod(1 - get_beta_schedule("linear", T))[[0, 100, 400, 700, 999]]
    tables = multistep_tables(ab, order=2)
    lam = [0.5 * math.log(a / (1 - a)) for a in ab]
    for t in range(len(ab)):
        if t == 0:  # to the data: x_prev = x_theta
            expected = (0.0, 1.0, 0.0)
        else:
            a_prev, a = ab[t - 1], ab[t]
            h = lam[t - 1] - lam[t]
            ratio = math.sqrt(1 - a_prev) / math.sqrt(1 - a)
            weight = -math.sqrt(a_prev) * (math.exp(-h) - 1)
            first_order = t == len(ab) - 1 or t == 1  # few steps: the last two are first order
            correction = 0.0 if first_order else 1 / (2 * ((lam[t] - lam[t + 1]) / h))
            expected = (ratio, weight, correction)
        got = (tables["ratio"][t], tables["weight"][t], tables["correction"][t])
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert not multistep_tables(ab, order=1)["correction"].any()


def _errors(process, order: int, counts, spacing: str = "") -> list[float]:
    """RMS error of the solver's samples against the exact ODE solution, per number of steps."""
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    x_T = tf.constant(np.random.default_rng(0).normal(size=(64, 2, 2, 1)))
    errors = []
    for count in counts:
        steps = f"{spacing}{count}" if spacing else count
        spec = SamplingSpec("dpm_solver++", steps=steps, solver_order=order, clip_denoised=False)
        got = run_loop(process, denoise, x_T.shape, 0, spec, noise=x_T)["sample"].numpy()
        kept = process.with_steps(spec.steps).timestep_map
        assert kept[0] == 0 and kept[-1] == T - 1
        ab = process.alphas_cumprod
        at_zero = _ode_solution(x_T.numpy(), ab[T - 1], ab[0])  # exact ODE to the last grid point
        expected = optimal_xstart(at_zero, ab[0], MU, S)  # then the final step, x_theta
        errors.append(float(np.sqrt(np.mean((got - expected) ** 2))))
    return errors


def _slope(counts, errors) -> float:
    return float(np.polyfit(np.log(counts), np.log(errors), 1)[0])


def test_second_order_converges_at_order_two_and_first_order_at_one(process64):
    # Steps evenly spaced in log-SNR, the solver's natural grid; 20 steps and up, where every
    # step but the first and the last is second order.
    counts = [20, 40, 80, 160]
    second = _errors(process64, 2, counts, "logsnr")
    first = _errors(process64, 1, counts, "logsnr")
    assert -2.4 < _slope(counts, second) < -1.7, second
    assert -1.2 < _slope(counts, first) < -0.8, first
    assert second[0] < first[0] / 5  # at 20 steps the second order is far closer


def test_few_steps_take_the_last_two_steps_at_first_order(process64):
    ab = process64.with_steps("logsnr10").alphas_cumprod
    assert multistep_tables(ab, 2)["correction"][:2].tolist() == [0.0, 0.0]
    assert multistep_tables(process64.with_steps("logsnr20").alphas_cumprod, 2)["correction"][1] > 0
    (second,), (first,) = (_errors(process64, order, [10], "logsnr") for order in (2, 1))
    assert second < first / 20  # measured: 5e-4 against 7e-2


def test_first_order_equals_ddim_with_eta_zero():
    process = GaussianDiffusion(get_beta_schedule("linear", T))
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    shape = (8, 4, 4, 1)
    first_order = SamplingSpec("dpm_solver++", UniformSteps(20), solver_order=1)
    dpm = run_loop(process, denoise, shape, 3, first_order)["sample"]
    ddim = run_loop(process, denoise, shape, 3, SamplingSpec("ddim", 20))["sample"]
    np.testing.assert_allclose(dpm.numpy(), ddim.numpy(), atol=2e-6)


def test_graph_and_xla_give_the_same_samples(process64):
    process = GaussianDiffusion(get_beta_schedule("linear", T))
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    spec = SamplingSpec("dpm_solver++", "logsnr15")
    graph = run_loop(process, denoise, (4, 4, 4, 1), (1, 2), spec)["sample"]
    xla = run_loop(process, denoise, (4, 4, 4, 1), (1, 2), spec.replace(jit_compile=True))["sample"]
    np.testing.assert_allclose(graph.numpy(), xla.numpy(), atol=1e-5)
    assert np.abs(graph.numpy() - MU).max() < 2.0


def test_logsnr_spacing_is_even_in_log_snr():
    ab = np.cumprod(1 - get_beta_schedule("linear", T))
    keep = LogSNRSteps(20).indices(T, ab)
    assert len(set(keep)) == 20 and keep[0] == 0 and keep[-1] == T - 1
    gaps = np.diff(half_log_snr(ab)[keep])
    assert np.all(gaps < 0) and gaps.max() / gaps.min() < 1.1  # a fine grid: nearly equal gaps
    process = GaussianDiffusion(get_beta_schedule("linear", T))
    assert list(process.with_steps("logsnr20").timestep_map) == keep
    assert SamplingSpec("dpm_solver++", 20).steps == LogSNRSteps(20)  # its default spacing
    with pytest.raises(ValueError, match="needs the schedule"):
        from ddpm_tf import space_timesteps

        space_timesteps(T, "logsnr20")


def test_dynamic_thresholding_against_numpy():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 2.0, (1, 8, 8, 3)), rng.uniform(-0.9, 0.9, (1, 8, 8, 3))])
    got = bound_xstart(tf.constant(x, tf.float32), True, 0.9).numpy()
    for image, out in zip(x, got, strict=True):
        flat = np.sort(np.abs(image).ravel())
        s = max(1.0, flat[int(np.floor(0.9 * (flat.size - 1)))])
        np.testing.assert_allclose(out, np.clip(image, -s, s) / s, rtol=1e-6)
    np.testing.assert_array_equal(got[1], x[1].astype(np.float32))  # within [-1, 1]: unchanged
    assert np.abs(got).max() <= 1.0


def test_spec_rules_for_the_solver():
    assert SamplingSpec("dpm_solver++", solver_order=1).describe().startswith("dpm_solver++")
    with pytest.raises(ValueError, match="solver_order"):
        SamplingSpec("dpm_solver++", solver_order=3)
    with pytest.raises(ValueError, match="solver_order"):
        SamplingSpec("ddim", solver_order=1)
    with pytest.raises(ValueError, match="eta"):
        SamplingSpec("dpm_solver++", eta=0.5)
    with pytest.raises(ValueError, match="dynamic_threshold"):
        SamplingSpec(dynamic_threshold=1.0)


def test_learned_variance_outputs_use_their_mean_part():
    betas = get_beta_schedule("linear", T)
    fixed = GaussianDiffusion(betas)
    learned = GaussianDiffusion(betas, model_var_type="learned_range")
    denoise = eps_denoiser(fixed.alphas_cumprod, MU, S)

    def with_variance(x_t, t):
        return tf.concat([denoise(x_t, t), tf.fill(tf.shape(x_t), 0.3)], axis=-1)

    spec = SamplingSpec("dpm_solver++", "logsnr10")
    a = run_loop(fixed, denoise, (2, 4, 4, 1), 1, spec)["sample"]
    b = run_loop(learned, with_variance, (2, 4, 4, 1), 1, spec)["sample"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
