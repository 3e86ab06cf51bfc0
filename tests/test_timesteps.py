"""Timestep samplers: probabilities, weights and the unbiasedness of the weighted loss."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import LossSecondMomentResampler, UniformSampler, create_timestep_sampler


def test_uniform_sampler_covers_all_steps_with_unit_weights():
    sampler = UniformSampler(10)
    t, w = sampler.sample(20_000, seed=1)
    assert t.dtype == tf.int32 and np.all(w.numpy() == pytest.approx(1.0))
    counts = np.bincount(t.numpy(), minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300


def _warm(sampler, losses_per_t, rounds):
    for _ in range(rounds):
        t = np.arange(sampler.num_timesteps, dtype=np.int32)
        sampler.update_with_losses(t, losses_per_t(t))


def test_second_moment_sampler_is_uniform_until_warm():
    sampler = LossSecondMomentResampler(5, history_per_term=3)
    _warm(sampler, lambda t: t + 1.0, rounds=2)
    assert not bool(sampler.warmed_up())
    np.testing.assert_allclose(sampler.probabilities().numpy(), 0.2)
    _warm(sampler, lambda t: t + 1.0, rounds=1)
    assert bool(sampler.warmed_up())


def test_second_moment_probabilities_from_the_last_losses():
    T, H = 6, 4
    sampler = LossSecondMomentResampler(T, history_per_term=H, uniform_prob=0.1)
    rng = np.random.default_rng(0)
    fed = rng.uniform(0.1, 3.0, size=(H + 3, T))  # more rounds than the history holds
    for row in fed:
        sampler.update_with_losses(np.arange(T), row)
    kept = fed[-H:]  # the oldest rounds are dropped
    np.testing.assert_allclose(sampler.loss_history.numpy(), kept.T)
    rms = np.sqrt((kept**2).mean(axis=0))
    expected = 0.9 * rms / rms.sum() + 0.1 / T
    np.testing.assert_allclose(sampler.probabilities().numpy(), expected, rtol=1e-6)


def test_repeated_timesteps_in_one_batch_are_all_recorded_in_order():
    sampler = LossSecondMomentResampler(3, history_per_term=2)
    sampler.update_with_losses([1, 1, 1, 0], [5.0, 6.0, 7.0, 1.0])
    np.testing.assert_allclose(sampler.loss_history.numpy()[1], [6.0, 7.0])
    assert sampler.loss_counts.numpy().tolist() == [1, 2, 0]


def test_importance_weights_keep_the_loss_estimate_unbiased():
    T = 8
    true_loss = np.linspace(0.1, 5.0, T) ** 2  # very unequal per-step losses
    sampler = LossSecondMomentResampler(T, history_per_term=2)
    _warm(sampler, lambda t: true_loss[t], rounds=2)
    t, w = sampler.sample(200_000, seed=7)
    t, w = t.numpy(), w.numpy()
    estimate = np.mean(w * true_loss[t])
    assert estimate == pytest.approx(true_loss.mean(), rel=0.01)
    # Importance sampling here also lowers the variance of the estimate against uniform sampling.
    uniform_var = true_loss.var()
    assert np.var(w * true_loss[t]) < 0.5 * uniform_var
    # High-loss steps are drawn more often.
    assert np.bincount(t, minlength=T)[-1] > np.bincount(t, minlength=T)[0] * 5


def test_sampler_runs_inside_tf_function():
    sampler = LossSecondMomentResampler(4, history_per_term=1)

    @tf.function
    def step(seed):
        t, w = sampler.sample(6, seed)
        sampler.update_with_losses(t, tf.cast(t, tf.float32) + 1.0)
        return t, w

    seen = np.concatenate(
        [step(tf.constant([0, 1]))[0].numpy(), step(tf.constant([0, 2]))[0].numpy()]
    )
    expected_counts = np.isin(np.arange(4), seen).astype(int)
    np.testing.assert_array_equal(sampler.loss_counts.numpy(), expected_counts)
    np.testing.assert_allclose(
        sampler.loss_history.numpy()[:, 0], (np.arange(4) + 1.0) * expected_counts
    )


def test_named_samplers_and_errors():
    assert isinstance(create_timestep_sampler("uniform", 5), UniformSampler)
    assert isinstance(create_timestep_sampler("loss-second-moment", 5), LossSecondMomentResampler)
    with pytest.raises(ValueError, match="Unknown `timestep_sampler` 'lossaware'"):
        create_timestep_sampler("lossaware", 5)
    with pytest.raises(ValueError, match="num_timesteps"):
        UniformSampler(0)
    with pytest.raises(ValueError, match="history_per_term"):
        LossSecondMomentResampler(5, history_per_term=0)
