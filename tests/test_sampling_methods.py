"""The contract every registered sampling method keeps, checked against exact answers.

Each test runs for every method of `ddpm_tf.sampling.REGISTRY`, so a new method is tested by
registering it (as diffusers' schedulers share one test base). The data are x_0 ~ N(MU, S^2) with
their exact denoiser (tests/oracle.py), where the answers are closed forms:

- any sampler's output must have the data's moments, to within its discretisation error at the
  given number of network calls, and the error must fall as the calls grow;
- a deterministic sampler solves the probability-flow ODE, whose exact map keeps the standardized
  value (x_t - alpha_t MU) / sqrt(alpha_t^2 S^2 + sigma_t^2) of every trajectory: its output must
  approach that map sample by sample;
- the loop's hooks (a start inside the process, a transform of x_t, a transform of the output) do
  what they say for every method.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from oracle import eps_denoiser, optimal_xstart

from ddpm_tf import GaussianDiffusion, SamplingSpec, get_beta_schedule
from ddpm_tf.sampling import REGISTRY, Hooks, method_class, run_loop

MU, S = 0.2, 0.3
T = 1000
N = 8192
METHODS = sorted(REGISTRY)


@pytest.fixture(scope="module")
def process() -> GaussianDiffusion:
    return GaussianDiffusion(get_beta_schedule("linear", T))


@pytest.fixture(scope="module")
def process64() -> GaussianDiffusion:
    return GaussianDiffusion(get_beta_schedule("linear", T), dtype="float64")


def _spec(method: str, count: int, **settings) -> SamplingSpec:
    """`count` network calls with the method's default spacing and no clipping (Gaussian data
    leave [-1, 1])."""
    return SamplingSpec(method, count, clip_denoised=False, **settings)


def _deterministic(method: str, diffusion: GaussianDiffusion) -> bool:
    spec = _spec(method, 10)
    return not method_class(method)(diffusion.with_steps(spec.steps), spec).needs_noise


# The methods whose default settings draw no noise (probability-flow ODE solvers).
DETERMINISTIC = [m for m in METHODS if _deterministic(m, GaussianDiffusion(np.full(20, 0.05)))]


def _ode_map(x, ab_from: float, ab_to: float):
    """The probability-flow ODE's exact map from abar = ab_from to abar = ab_to (Gaussian data)."""
    z = (x - math.sqrt(ab_from) * MU) / math.sqrt(ab_from * S**2 + 1 - ab_from)
    return math.sqrt(ab_to) * MU + math.sqrt(ab_to * S**2 + 1 - ab_to) * z


def _exact_ode_output(x, diffusion, spec, ab_from: float):
    """The exact ODE from abar = ab_from to the process's last grid point, then the final step
    (x_theta there), as every sampler ends."""
    kept = diffusion.with_steps(spec.steps).timestep_map
    ab_last = diffusion.alphas_cumprod[kept[0]]
    return optimal_xstart(_ode_map(x, ab_from, ab_last), ab_last, MU, S)


def _moment_errors(samples: np.ndarray) -> tuple[float, float]:
    return abs(samples.mean() - MU), abs(samples.std() / S - 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_samples_have_the_data_moments_and_approach_them_as_calls_grow(method, process):
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    errors = {}
    for count in (10, 100):
        spec = _spec(method, count)
        x = run_loop(process, denoise, (N, 1, 1, 1), 7, spec)["sample"].numpy().ravel()
        errors[count] = _moment_errors(x)
    mean_error, std_error = errors[100]
    standard_error = S / math.sqrt(N)
    assert mean_error < 5 * standard_error + 0.005, (method, errors)
    assert std_error < 0.05, (method, errors)  # measured: 0.006 to 0.04 at 100 calls
    assert std_error <= errors[10][1] + 5 * standard_error / S, (method, errors)


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_deterministic_methods_converge_to_the_exact_ode_solution(method, process64):
    denoise = eps_denoiser(process64.alphas_cumprod, MU, S)
    x_T = tf.constant(np.random.default_rng(0).normal(size=(64, 2, 2, 1)))
    ab_top = process64.alphas_cumprod[T - 1]
    errors = []
    for count in (20, 40, 160):
        spec = _spec(method, count)
        got = run_loop(process64, denoise, x_T.shape, 0, spec, noise=x_T)["sample"].numpy()
        expected = _exact_ode_output(x_T.numpy(), process64, spec, ab_top)
        errors.append(float(np.sqrt(np.mean((got - expected) ** 2))))
    assert errors[0] > errors[1] > errors[2], (method, errors)
    assert errors[2] < 0.01, (method, errors)


def test_the_ode_solvers_are_known_as_such():
    assert {"ddim", "dpm_solver++", "unipc"} <= set(DETERMINISTIC)
    assert "ancestral" not in DETERMINISTIC


@pytest.mark.parametrize("method", METHODS)
def test_a_seed_reproduces_in_graph_and_xla(method, process):
    denoise = eps_denoiser(process.alphas_cumprod, MU, S)
    spec = _spec(method, 12)
    shape = (3, 4, 4, 2)
    a = run_loop(process, denoise, shape, (1, 2), spec)["sample"].numpy()
    b = run_loop(process, denoise, shape, (1, 2), spec)["sample"].numpy()
    c = run_loop(process, denoise, shape, (1, 3), spec)["sample"].numpy()
    xla = run_loop(process, denoise, shape, (1, 2), spec.replace(jit_compile=True))["sample"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    np.testing.assert_allclose(xla.numpy(), a, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_a_start_inside_the_process_samples_from_there(method, process64):
    """Started at step k from x_k ~ q(x_k), the samples have the data's moments; a deterministic
    method follows the exact ODE from abar_k."""
    denoise = eps_denoiser(process64.alphas_cumprod, MU, S)
    spec = _spec(method, 200)
    steps = process64.with_steps(spec.steps)
    start = 120  # a step index of the respaced process: 121 network calls from there
    ab = steps.alphas_cumprod[start]
    x0 = np.random.default_rng(1).normal(MU, S, (N, 1, 1, 1))
    x_k = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * np.random.default_rng(2).normal(size=x0.shape)
    out = run_loop(process64, denoise, x_k.shape, 3, spec, noise=x_k, hooks=Hooks(start=start))
    x = out["sample"].numpy()
    mean_error, std_error = _moment_errors(x.ravel())
    assert mean_error < 5 * S / math.sqrt(N) + 0.005 and std_error < 0.05, (mean_error, std_error)
    if _deterministic(method, process64):
        expected = _exact_ode_output(x_k, process64, spec, ab)
        assert np.sqrt(np.mean((x - expected) ** 2)) < 0.01
    with pytest.raises(ValueError, match="pass x at that step"):
        run_loop(process64, denoise, x_k.shape, 3, spec, hooks=Hooks(start=start))
    with pytest.raises(ValueError, match=r"step index in \[0, 200\)"):
        run_loop(process64, denoise, x_k.shape, 3, spec, noise=x_k, hooks=Hooks(start=200))


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_a_start_inside_the_process_is_a_first_step(method, process64):
    """Started at index k, a multistep method has no history: the loop equals one over the
    process that ends at k (the same grid below it), whose first step is its top."""
    denoise = eps_denoiser(process64.alphas_cumprod, MU, S)
    spec, start = _spec(method, 200), 120  # both grids at least 15 points long
    kept = process64.with_steps(spec.steps).timestep_map
    x_k = tf.constant(np.random.default_rng(4).normal(size=(16, 2, 2, 1)))
    started = run_loop(process64, denoise, x_k.shape, 0, spec, noise=x_k, hooks=Hooks(start=start))
    top = process64.respace(kept[: start + 1])
    whole = run_loop(top, denoise, x_k.shape, 0, spec.replace(steps="all"), noise=x_k)
    np.testing.assert_allclose(started["sample"].numpy(), whole["sample"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_the_x_and_output_hooks_reach_every_step(method, process64):
    spec = _spec(method, 20)
    kept = process64.with_steps(spec.steps)
    ab = process64.alphas_cumprod
    # An output hook that swaps in the denoiser of other data for a network that predicts eps = 0:
    # the samples are those of the other data's denoiser, drawn from the same seed.
    other = eps_denoiser(ab, -0.5, 0.1)
    swapped = Hooks(transform_output=lambda output, x_t, t: other(x_t, kept.model_timesteps(t)))
    zero = lambda x_t, t: tf.zeros_like(x_t)  # noqa: E731
    shape = (64, 1, 1, 1)
    out = run_loop(process64, zero, shape, 5, spec, hooks=swapped)["sample"].numpy()
    np.testing.assert_allclose(out, run_loop(process64, other, shape, 5, spec)["sample"], 1e-12)
    assert (
        abs(out.mean() + 0.5)
        < 0.05
        < np.abs(run_loop(process64, zero, shape, 5, spec)["sample"].numpy().mean() + 0.5)
    )
    # An x hook that pins x_t to sqrt(abar_t) c: every method's last step lands on x_theta there.
    c = 0.7

    def pin(x, t):
        return tf.ones_like(x) * tf.sqrt(kept.gather(kept.alphas_cumprod, t, x)) * c

    denoise = eps_denoiser(ab, MU, S)
    shape = (4, 2, 2, 1)
    got = run_loop(process64, denoise, shape, 5, spec, hooks=Hooks(transform_x=pin))["sample"]
    ab0 = kept.alphas_cumprod[0]
    expected = optimal_xstart(math.sqrt(ab0) * c, ab0, MU, S)
    np.testing.assert_allclose(got.numpy(), np.full(shape, expected), rtol=1e-9)


def test_steps_text_parses_to_one_typed_value_and_reads_back():
    from ddpm_tf.spacing import (
        AllSteps,
        LogSNRSteps,
        SectionSteps,
        StrideSteps,
        TrailingSteps,
        UniformSteps,
        parse_steps,
    )

    cases = {
        "trailing4": TrailingSteps(4),
        "all": AllSteps(),
        None: AllSteps(),
        "50": UniformSteps(50),
        50: UniformSteps(50),
        "uniform50": UniformSteps(50),
        "stride50": StrideSteps(50),
        "ddim50": StrideSteps(50),
        "logsnr20": LogSNRSteps(20),
        "10,15,20": SectionSteps((10, 15, 20)),
        (10, 15): SectionSteps((10, 15)),
    }
    for text, expected in cases.items():
        steps = parse_steps(text)
        assert steps == expected, text
        assert parse_steps(steps.text) == steps  # the text is canonical
    assert parse_steps("20", LogSNRSteps) == LogSNRSteps(20)  # a bare count: the given spacing
    for bad in ("0", "fast20", "uniform", "10,,20", True, 2.5, "logsnr0"):
        with pytest.raises(ValueError, match="steps must be"):
            parse_steps(bad)


def test_compare_items_give_one_row_per_steps_value_and_commas_are_sections():
    from ddpm_tf.sampling.spec import parse_comparisons
    from ddpm_tf.spacing import LogSNRSteps, SectionSteps, UniformSteps

    base = SamplingSpec("ddim", 100, eta=0.5, clip_denoised=False)
    rows = parse_comparisons(["ddim:10/20", "ddim:10,20", "dpm_solver++:5", "ancestral:all"], base)
    assert [(r.method, r.steps) for r in rows[:3]] == [
        ("ddim", UniformSteps(10)),
        ("ddim", UniformSteps(20)),
        ("ddim", SectionSteps((10, 20))),
    ]
    assert rows[3].method == "dpm_solver++" and rows[3].steps == LogSNRSteps(5)
    assert rows[3].eta == 0.0 and rows[0].eta == 0.5  # settings a method does not take reset
    assert not any(r.clip_denoised for r in rows)  # the shared settings carry over
    assert rows[4].steps.text == "all"
    for bad in ("ddim", "ddim:", "ddim:10//20", "euler:10"):
        with pytest.raises(ValueError, match="--compare|method"):
            parse_comparisons([bad], base)
