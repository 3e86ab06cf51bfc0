"""UniPC (bh2): its coefficient tables against closed forms, and its order of convergence on the
probability-flow ODE of Gaussian data, whose exact solution is known (the contract every method
keeps is in tests/test_sampling_methods.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from oracle import eps_denoiser, optimal_xstart

from ddpm_tf import GaussianDiffusion, SamplingSpec, get_beta_schedule
from ddpm_tf.sampling import run_loop
from ddpm_tf.sampling.dpm_solver import multistep_tables
from ddpm_tf.sampling.unipc import unipc_tables

MU, S = 0.2, 0.3


def _grid(count: int = 20) -> np.ndarray:
    process = GaussianDiffusion(get_beta_schedule("linear", 1000), dtype="float64")
    return process.with_steps(f"logsnr{count}").alphas_cumprod


@pytest.mark.parametrize("order", [1, 2])
def test_the_predictor_is_dpm_solver_plus_plus(order):
    """UniP of order 1 is DDIM's step and of order 2 DPM-Solver++(2M)'s: x_{t-1} = ratio x_t +
    weight (m_t + c (m_t - m_{t+1}))."""
    ab = _grid()
    predictor = unipc_tables(ab, order)["predictor"]
    dpm = multistep_tables(ab, order)
    ratio, weight, c = dpm["ratio"], dpm["weight"], dpm["correction"]
    np.testing.assert_allclose(predictor[:, 0], ratio, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(predictor[:, 1], weight * (1 + c), rtol=1e-12)
    if order == 2:
        np.testing.assert_allclose(predictor[:, 2], -weight * c, rtol=1e-12, atol=1e-15)
        assert (c[1:-1] > 0).all()  # the test compares second-order steps, not only first


def test_the_first_order_corrector_is_the_trapezoidal_rule():
    """UniC-1 of the step t+1 -> t: x_t^c = ratio x_{t+1}^c + weight (m_t + m_{t+1}) / 2, with the
    first-order step's ratio and weight; x at the start is left as it is."""
    ab = _grid()
    corrector = unipc_tables(ab, 1)["corrector"]
    dpm = multistep_tables(ab, 1)
    ratio, weight = dpm["ratio"][1:], dpm["weight"][1:]  # of the steps t+1 -> t, t = 0 .. T'-2
    np.testing.assert_allclose(corrector[:-1, 0], 0.0)
    np.testing.assert_allclose(corrector[:-1, 1], ratio, rtol=1e-12)
    np.testing.assert_allclose(corrector[:-1, 2], weight / 2, rtol=1e-12)
    np.testing.assert_allclose(corrector[:-1, 3], weight / 2, rtol=1e-12)
    np.testing.assert_array_equal(corrector[-1], [1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_update_keeps_a_constant_data_prediction_exact(order):
    """With m = x_0 at every step and x on the exact path sqrt(abar) x_0, each predictor and
    corrector step stays on it: its coefficients of x and of the m's sum to the path's ratio."""
    ab = _grid()
    tables = unipc_tables(ab, order)
    alpha = np.sqrt(ab)
    alpha_prev = np.concatenate([[1.0], alpha[:-1]])
    predictor, corrector = tables["predictor"], tables["corrector"]
    np.testing.assert_allclose(predictor[:, 0] * alpha + predictor[:, 1:].sum(1), alpha_prev)
    x_last = np.concatenate([alpha[1:], [0.0]])  # x_{t+1} on the path (unused at the start)
    total = corrector[:, 0] * alpha + corrector[:, 1] * x_last + corrector[:, 2:].sum(1)
    np.testing.assert_allclose(total, alpha, rtol=1e-12)


def _errors(process, counts, order: int, method: str = "unipc") -> list[float]:
    """RMS distance to the exact ODE solution (then x_theta at the last grid point) from x_T."""
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    x_T = tf.constant(np.random.default_rng(0).normal(size=(64, 2, 2, 1)))
    ab_top = process.alphas_cumprod[-1]
    z = (x_T.numpy() - math.sqrt(ab_top) * MU) / math.sqrt(ab_top * S**2 + 1 - ab_top)
    errors = []
    for count in counts:
        spec = SamplingSpec(method, count, clip_denoised=False, solver_order=order)
        got = run_loop(process, denoise, x_T.shape, 0, spec, noise=x_T)["sample"].numpy()
        ab = process.alphas_cumprod[process.with_steps(spec.steps).timestep_map[0]]
        x_last = math.sqrt(ab) * MU + math.sqrt(ab * S**2 + 1 - ab) * z
        errors.append(float(np.sqrt(np.mean((got - optimal_xstart(x_last, ab, MU, S)) ** 2))))
    return errors


def _rates(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]


def test_the_corrector_raises_the_order_by_one():
    """Order p with its corrector converges at order p + 1 (measured on this grid: 2.0, 2.0 for
    p = 1 and 2.9, 2.5 for p = 2, where DPM-Solver++(2M) gives 2.0, 2.1)."""
    process = GaussianDiffusion(get_beta_schedule("linear", 1000), dtype="float64")
    counts = (20, 40, 80)
    first, second = _errors(process, counts, 1), _errors(process, counts, 2)
    dpm = _errors(process, counts, 2, "dpm_solver++")
    assert min(_rates(first)) > 1.8, first
    assert min(_rates(second)) > 2.3 and max(_rates(dpm)) < 2.3, (second, dpm)
    assert second[-1] < dpm[-1] / 3, (second, dpm)


def test_third_order_converges_faster_on_a_fine_grid():
    """On 20,000 discrete steps (log-SNR steps land close to their ideal points) order 3 converges
    at about order 4 (measured 4.4, 3.4 from 20 to 80 calls) and beats order 2 at 80 calls."""
    process = GaussianDiffusion(get_beta_schedule("linear", 20000), dtype="float64")
    third, second = _errors(process, (20, 40, 80), 3), _errors(process, (80,), 2)
    assert min(_rates(third)) > 3.0, third
    assert third[-1] < second[0] / 5, (third, second)


def test_orders_are_checked_per_method():
    SamplingSpec("unipc", 10, solver_order=3)
    with pytest.raises(ValueError, match="UniPC takes 1, 2 or 3"):
        SamplingSpec("unipc", 10, solver_order=4)
    with pytest.raises(ValueError, match="DPM-Solver"):
        SamplingSpec("dpm_solver++", 10, solver_order=3)
