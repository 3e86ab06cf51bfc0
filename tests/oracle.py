"""The exact denoiser for Gaussian data, an independent reference for samplers and bits/dim.

For x_0 ~ N(mu, s^2) per dimension and x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, the posterior mean
E[x_0 | x_t] is linear in x_t, so the optimal eps prediction and the true score are closed forms.
"""

import numpy as np
import tensorflow as tf


def marginal_variance(alpha_bar, s):
    return alpha_bar * s**2 + 1.0 - alpha_bar


def optimal_xstart(x_t, alpha_bar, mu, s):
    gain = np.sqrt(alpha_bar) * s**2 / marginal_variance(alpha_bar, s)
    return mu + gain * (x_t - np.sqrt(alpha_bar) * mu)


def optimal_eps(x_t, alpha_bar, mu, s):
    return (x_t - np.sqrt(alpha_bar) * optimal_xstart(x_t, alpha_bar, mu, s)) / np.sqrt(
        1 - alpha_bar
    )


def true_score(x_t, alpha_bar, mu, s):
    return -(x_t - np.sqrt(alpha_bar) * mu) / marginal_variance(alpha_bar, s)


def eps_denoiser(alphas_cumprod: np.ndarray, mu: float, s: float):
    """A denoise_fn(x_t, t) returning the optimal eps; t indexes the ORIGINAL schedule."""
    table = tf.constant(alphas_cumprod, tf.float64)

    def denoise(x_t, t):
        ab = tf.cast(tf.reshape(tf.gather(table, t), [-1, 1, 1, 1]), x_t.dtype)
        gain = tf.sqrt(ab) * s**2 / (ab * s**2 + 1.0 - ab)
        xs = mu + gain * (x_t - tf.sqrt(ab) * mu)
        return (x_t - tf.sqrt(ab) * xs) / tf.sqrt(1.0 - ab)

    return denoise


def correlated_denoiser(alphas_cumprod: np.ndarray, mean: np.ndarray, cov: np.ndarray):
    """The optimal eps for x_0 ~ N(mean, cov) over the D = H*W*C pixels of each image (flattened
    in row-major order): E[x_0 | x_t] = mean + sqrt(abar) cov (abar cov + (1 - abar) I)^-1
    (x_t - sqrt(abar) mean), one D x D gain per timestep of the ORIGINAL schedule."""
    ab = np.asarray(alphas_cumprod, np.float64)
    d = mean.size
    gains = np.stack([np.sqrt(a) * cov @ np.linalg.inv(a * cov + (1 - a) * np.eye(d)) for a in ab])
    gains, table, mu = (tf.constant(v, tf.float64) for v in (gains, ab, mean))

    def denoise(x_t, t):
        shape = tf.shape(x_t)
        x = tf.reshape(tf.cast(x_t, tf.float64), [shape[0], d])
        a = tf.gather(table, t)[:, None]
        xs = mu + tf.einsum("bij,bj->bi", tf.gather(gains, t), x - tf.sqrt(a) * mu)
        eps = (x - tf.sqrt(a) * xs) / tf.sqrt(1.0 - a)
        return tf.cast(tf.reshape(eps, shape), x_t.dtype)

    return denoise
