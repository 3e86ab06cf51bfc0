"""Ancestral sampling: the DDPM reverse process of Ho et al. (2020).

x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I) (no noise on the last step), where the mean is
the posterior mean q(x_{t-1} | x_t, x_0) at the model's x_0 prediction and sigma_t^2 the model's
variance: fixed (beta_t or the posterior variance) or learned.
"""

from __future__ import annotations

import tensorflow as tf

from ddpm_tf.sampling.method import Predict, SamplingMethod, not_final

__all__ = ["Ancestral"]


class Ancestral(SamplingMethod):
    name = "ancestral"
    summary = "the DDPM reverse process (Ho et al. 2020), one network call per step"

    def step(self, predict: Predict, x_t, t, noise, memory=()) -> tuple:
        out = predict(x_t, t)
        scale = not_final(t, x_t) * tf.exp(0.5 * out["log_variance"])
        return out["mean"] + scale * tf.cast(noise, x_t.dtype), out["pred_xstart"], ()
