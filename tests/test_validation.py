"""Bad input raises a ValueError naming the argument, before any work is done."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import GaussianDiffusion, get_beta_schedule, space_timesteps

T = 50


@pytest.fixture(scope="module")
def d():
    return GaussianDiffusion(get_beta_schedule("linear", 100)[:T])


X = np.zeros((2, 4, 4, 3), np.float32)
T_OK = np.array([0, 1], np.int32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model_mean_type": "eps"}, "`model_mean_type` 'eps'"),
        ({"model_var_type": "large"}, "`model_var_type` 'large'"),
        ({"loss_type": "l2"}, "`loss_type` 'l2'"),
        ({"betas": [0.1, 1.2]}, "betas"),
        ({"betas": [0.0, 0.1]}, "betas"),
        ({"dtype": "int32"}, "dtype"),
        ({"timestep_map": [3, 2]}, "timestep_map"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"betas": [0.1, 0.2], **kwargs}
    with pytest.raises(ValueError, match=match):
        GaussianDiffusion(**args)


def test_images_must_be_float_rank4(d):
    with pytest.raises(ValueError, match="`x_start` must be a float tensor.*uint8"):
        d.q_sample(X.astype(np.uint8), T_OK)
    with pytest.raises(ValueError, match=r"`x_start` must have shape \[B, H, W, C\]"):
        d.q_sample(X[0], T_OK)
    with pytest.raises(ValueError, match="`x_t`"):
        d.p_mean_variance(X, X[..., 0], T_OK)


def test_timesteps_must_be_int_in_range_with_batch_size(d):
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 50\); got values from 0 to 50"):
        d.q_sample(X, [0, 50])
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 50\)"):
        d.q_sample(X, [-1, 3])
    with pytest.raises(ValueError, match="integer tensor"):
        d.q_sample(X, [0.5, 1.0])
    with pytest.raises(ValueError, match="`t` has 3 entries but the images have batch 2"):
        d.q_sample(X, [0, 1, 2])
    with pytest.raises(ValueError, match=r"`t` must have shape \[B\]"):
        d.q_sample(X, [[0, 1]])


def test_timestep_range_is_checked_inside_graphs(d):
    fn = tf.function(lambda x, t: d.q_sample(x, t, seed=0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`t` must lie in \[0, 50\)"):
        fn(tf.constant(X), tf.constant([0, 99]))


def test_model_output_channels_must_fit_the_variance_type(d):
    with pytest.raises(ValueError, match="`model_output` has 6 channels.*fixed_large.*C = 3"):
        d.p_mean_variance(np.zeros((2, 4, 4, 6), np.float32), X, T_OK)
    learned = GaussianDiffusion([0.1, 0.2], model_var_type="learned_range")
    with pytest.raises(ValueError, match="`model_output` has 3 channels.*2C.*= 6"):
        learned.p_mean_variance(X, X, T_OK)
    with pytest.raises(ValueError, match="`model_output` has 3 channels"):
        learned.training_losses(lambda x, t: x, X, T_OK)


def test_sampler_arguments(d):
    fn = lambda x, t: x
    with pytest.raises(ValueError, match=r"`shape` must be \[B, H, W, C\]"):
        d.p_sample_loop(fn, (2, 4, 4), seed=0)
    with pytest.raises(ValueError, match="`seed` must be an int or a pair"):
        d.p_sample_loop(fn, (2, 4, 4, 1), seed="abc")
    with pytest.raises(ValueError, match="`seed` must be an int or a pair"):
        d.p_sample_loop(fn, (2, 4, 4, 1), seed=(1, 2, 3))
    with pytest.raises(ValueError, match=r"eta must be a number in \[0.0, 1.0\]"):
        d.ddim_sample_loop(fn, (2, 4, 4, 1), seed=0, eta=2.0)
    with pytest.raises(ValueError, match="`noise`"):
        d.p_sample_loop(fn, (2, 4, 4, 1), seed=0, noise=np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="every must be an int >= 0"):
        d.p_sample_loop_progressive(fn, (2, 4, 4, 1), seed=0, every=-1)


def test_bpd_needs_images_in_unit_range(d):
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        d.calc_bpd_loop(lambda x, t: x, X + 3.0)


def test_respace_identity_and_errors(d):
    same = d.respace(space_timesteps(T, T))
    np.testing.assert_allclose(same.betas, d.betas, rtol=1e-12)
    np.testing.assert_array_equal(same.timestep_map, np.arange(T))
    for name in ("posterior_variance", "posterior_log_variance_clipped", "alphas_cumprod"):
        np.testing.assert_allclose(getattr(same, name), getattr(d, name), rtol=1e-12)
    fn = lambda x, t: 0.1 * x
    np.testing.assert_array_equal(
        same.p_sample_loop(fn, (2, 2, 2, 1), seed=4).numpy(),
        d.p_sample_loop(fn, (2, 2, 2, 1), seed=4).numpy(),
    )
    with pytest.raises(ValueError, match="use_timesteps"):
        d.respace([T])


def test_respaced_network_sees_original_indices(d):
    seen = []
    r = d.respace([0, 10, 49])
    r.training_losses(lambda x, t: (seen.append(t.numpy().tolist()), x)[1], X, [1, 2])
    assert seen == [[10, 49]]
    twice = r.respace([0, 2])
    twice.training_losses(lambda x, t: (seen.append(t.numpy().tolist()), x)[1], X, [0, 1])
    assert seen[-1] == [0, 49]
