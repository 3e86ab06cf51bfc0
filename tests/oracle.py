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


class GaussianMixture:
    """Labelled data x_0 | y=k ~ N(means[k], stds[k]^2 I), p(y=k) = weights[k], in D dimensions
    (images [B, 1, 1, D]): its noisy class posterior p(y | x_t) and its exact denoiser are closed
    forms, since x_t | k ~ N(sqrt(abar) means[k], (abar stds[k]^2 + 1 - abar) I)."""

    def __init__(self, alphas_cumprod, means, stds, weights):
        self.ab = tf.constant(alphas_cumprod, tf.float64)
        self.means = np.asarray(means, np.float64)
        self.stds = np.asarray(stds, np.float64)
        self.weights = np.asarray(weights, np.float64)
        self.dim = self.means.shape[1]

    def _terms(self, x_t, t):
        """(x [B, D] float64, abar [B, 1], per-component log joint [B, K], variances [B, K])."""
        x = tf.reshape(tf.cast(x_t, tf.float64), [-1, self.dim])
        ab = tf.gather(self.ab, t)[:, None]
        var = ab * self.stds**2 + 1.0 - ab  # [B, K]
        centred = x[:, None, :] - tf.sqrt(ab)[:, :, None] * self.means  # [B, K, D]
        log_joint = (
            np.log(self.weights)
            - 0.5 * self.dim * tf.math.log(2 * np.pi * var)
            - 0.5 * tf.reduce_sum(centred**2, -1) / var
        )
        return x, ab, log_joint, var

    def classifier(self, inputs):
        """Logits log p(y, x_t) [B, K] of `[x_t, t]` (t the schedule's indices): exact p(y | x_t)."""
        x_t, t = inputs
        return tf.cast(self._terms(x_t, t)[2], x_t.dtype)

    def denoiser(self, label: int | None = None):
        """denoise_fn(x_t, t) -> the exact eps of p(x_0) (or of p(x_0 | y=label))."""

        def denoise(x_t, t):
            x, ab, log_joint, var = self._terms(x_t, t)
            if label is None:
                resp = tf.nn.softmax(log_joint, -1)
            else:
                resp = tf.one_hot(tf.fill(tf.shape(t), label), len(self.weights), dtype=tf.float64)
            gain = tf.sqrt(ab) * self.stds**2 / var  # [B, K]
            centred = x[:, None, :] - tf.sqrt(ab)[:, :, None] * self.means
            x0 = tf.reduce_sum(resp[:, :, None] * (self.means + gain[:, :, None] * centred), 1)
            eps = (x - tf.sqrt(ab) * x0) / tf.sqrt(1.0 - ab)
            return tf.cast(tf.reshape(eps, tf.shape(x_t)), x_t.dtype)

        return denoise

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws (x_0 [n, D], y [n])."""
        y = rng.choice(len(self.weights), n, p=self.weights)
        return self.means[y] + self.stds[y, None] * rng.normal(size=(n, self.dim)), y

    def posterior(self, x0: np.ndarray) -> np.ndarray:
        """p(y | x_0) [n, K] of clean points [n, D]."""
        d2 = ((x0[:, None, :] - self.means) ** 2).sum(-1)
        log_joint = np.log(self.weights) - self.dim * np.log(self.stds) - 0.5 * d2 / self.stds**2
        log_joint -= log_joint.max(1, keepdims=True)
        p = np.exp(log_joint)
        return p / p.sum(1, keepdims=True)
