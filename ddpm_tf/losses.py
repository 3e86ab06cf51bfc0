"""Likelihood terms of the variational bound, in nats per dimension.

Both terms go through `tensorflow_probability` distributions: the Gaussian KL of L_{t-1} through
`tfd.kl_divergence` of two `tfd.Normal`s, and the decoder L_0 as the exact probability mass that a
Normal puts on each of the 256 pixel bins, computed from tfp's log-CDFs so that bins far in a tail
keep their (tiny) mass instead of rounding to log(0).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

NUM_BINS = 256
BIN_HALF_WIDTH = 1.0 / (NUM_BINS - 1)  # images in [-1, 1]: bin centres 2/255 apart
# Values beyond these are the first/last bin, which are open-ended (mass from -inf / to +inf).
_EDGE = 1.0 - BIN_HALF_WIDTH


def normal_from_log_variance(mean: tf.Tensor, log_variance: tf.Tensor) -> tfd.Normal:
    """A diagonal Normal given its mean and log-variance (same shape or broadcastable)."""
    return tfd.Normal(loc=mean, scale=tf.exp(0.5 * log_variance))


def normal_kl(
    mean1: tf.Tensor, log_variance1: tf.Tensor, mean2: tf.Tensor, log_variance2: tf.Tensor
) -> tf.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return tfd.kl_divergence(
        normal_from_log_variance(mean1, log_variance1),
        normal_from_log_variance(mean2, log_variance2),
    )


def _log_sub_exp(log_a: tf.Tensor, log_b: tf.Tensor) -> tf.Tensor:
    """log(exp(a) - exp(b)) for a >= b without forming exp(a) - exp(b) directly."""
    tiny = tf.constant(1e-12, log_a.dtype)
    return log_a + tf.math.log(-tf.math.expm1(tf.minimum(log_b - log_a, -tiny)))


def discretized_gaussian_log_likelihood(
    x: tf.Tensor, mean: tf.Tensor, log_scale: tf.Tensor
) -> tf.Tensor:
    """Elementwise log-probability of pixel values `x` (in [-1, 1], on the 256-bin grid) in nats.

    Each value owns the interval x +- 1/255 under N(mean, exp(log_scale)^2); the first and last
    bins extend to -inf and +inf so the 256 probabilities sum to one. An interval right of the mean
    is measured with survival functions, one left of it with CDFs, so the difference of two nearly
    equal numbers never has to be formed in a tail.
    """
    dist = tfd.Normal(loc=mean, scale=tf.exp(log_scale))
    lower = x - BIN_HALF_WIDTH
    upper = x + BIN_HALF_WIDTH
    right_of_mean = (lower + upper) > 2.0 * mean
    log_big = tf.where(right_of_mean, dist.log_survival_function(lower), dist.log_cdf(upper))
    log_small = tf.where(right_of_mean, dist.log_survival_function(upper), dist.log_cdf(lower))
    interior = _log_sub_exp(log_big, log_small)
    first_bin = dist.log_cdf(upper)
    last_bin = dist.log_survival_function(lower)
    return tf.where(x < -_EDGE, first_bin, tf.where(x > _EDGE, last_bin, interior))


def mean_over_dims(x: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the batch axis: [B, ...] -> [B]."""
    return tf.reduce_mean(x, axis=tf.range(1, tf.rank(x)))
