import math

import numpy as np
import pytest

from ddpm_tf.schedules import (
    get_beta_schedule,
    respaced_betas,
    space_timesteps,
    validate_betas,
)


def test_linear_matches_ho_et_al_endpoints_and_scales_with_T():
    betas = get_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / 999)
    short = get_beta_schedule("linear", 250)
    assert short[0] == pytest.approx(4e-4) and short[-1] == pytest.approx(0.08)


def test_cosine_follows_its_alpha_bar():
    T = 1000
    betas = get_beta_schedule("cosine", T)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    alpha_bar = np.cumprod(1 - betas)
    for t in (0, 10, 500, 900):
        assert alpha_bar[t] == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert betas.max() <= 0.999 and betas[-1] == pytest.approx(0.999)


def test_quadratic_and_sigmoid_shapes():
    quad = get_beta_schedule("quadratic", 100)
    assert np.allclose(np.diff(np.sqrt(quad)), (math.sqrt(0.2) - math.sqrt(1e-3)) / 99)
    sig = get_beta_schedule("sigmoid", 101)
    lo, hi = 1e-4 * 1000 / 101, 0.02 * 1000 / 101
    assert sig[50] == pytest.approx((lo + hi) / 2)  # sigmoid(0) = 1/2 halfway
    assert np.all(np.diff(sig) > 0)


def test_user_array_is_validated_and_kept_in_float64():
    betas = get_beta_schedule(np.array([0.1, 0.2], np.float32))
    assert betas.dtype == np.float64
    for bad in ([0.1, 1.0], [0.0, 0.1], [-0.1], [np.nan], [[0.1]], []):
        with pytest.raises(ValueError, match="betas"):
            get_beta_schedule(np.array(bad, dtype=float))


def test_unknown_schedule_and_bad_T():
    with pytest.raises(ValueError, match="Unknown beta schedule 'cosin'"):
        get_beta_schedule("cosin", 10)
    with pytest.raises(ValueError, match="num_timesteps"):
        get_beta_schedule("linear", 0)
    with pytest.raises(ValueError, match="inside \\(0, 1\\)"):
        get_beta_schedule("linear", 10)  # 1000/10 * 0.02 = 2 > 1


def test_space_timesteps_hand_computed_cases():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim10")[-1] == 900  # never T-1 for ddim
    # Two sections of 50, stride 49/9: 0, 5.44, 10.9, 16.3, 21.8, 27.2, 32.7, 38.1, 43.6, 49.
    first = [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert space_timesteps(100, "10,10") == first + [50 + s for s in first]
    # Stride 2.5: 0, 2.5 -> 2 (half to even), 5.
    assert space_timesteps(6, [3]) == [0, 2, 5]
    # Sections of sizes 4, 3, 3 (remainder to the first); count 1 keeps the section's first step.
    assert space_timesteps(10, [1, 1, 3]) == [0, 4, 7, 8, 9]
    assert space_timesteps(10, 10) == list(range(10))


@pytest.mark.parametrize(
    "counts, match",
    [
        ("ddim7", "no integer stride"),
        ("ddimX", "ddimN"),
        ("a,b", "comma"),
        ([20], "section 0"),
        ([], "empty"),
    ],
)
def test_space_timesteps_errors(counts, match):
    with pytest.raises(ValueError, match=match):
        space_timesteps(10, counts)


def test_respaced_betas_keep_alpha_bar_of_kept_steps():
    betas = get_beta_schedule("linear", 1000)
    keep = space_timesteps(1000, 37)
    new, mapped = respaced_betas(betas, keep)
    assert np.array_equal(mapped, keep)
    assert np.allclose(np.cumprod(1 - new), np.cumprod(1 - betas)[keep], rtol=1e-12)
    with pytest.raises(ValueError, match="use_timesteps"):
        respaced_betas(betas, [0, 1000])


def test_validate_betas_names_the_argument():
    with pytest.raises(ValueError, match="`my_betas`"):
        validate_betas([0.5, 1.5], name="my_betas")
