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
