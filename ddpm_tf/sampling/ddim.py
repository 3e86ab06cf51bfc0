"""DDIM (Song et al. 2021): the non-Markovian sampler with stochasticity eta.

From the model's x_0 prediction (clipped as asked) and the eps it implies,
x_{t-1} = sqrt(abar_{t-1}) x_0 + sqrt(1 - abar_{t-1} - sigma_t^2) eps + sigma_t z with
sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}): eta = 0 is the
deterministic sampler (a first-order solver of the probability-flow ODE), eta = 1 the ancestral
sampler with the posterior variance. Eps is re-derived from the bounded x_0, as the reference does.
"""

from __future__ import annotations

import tensorflow as tf

from ddpm_tf.sampling.method import Predict, SamplingMethod, not_final

__all__ = ["DDIM"]


class DDIM(SamplingMethod):
    name = "ddim"
    summary = "DDIM (Song et al. 2021); eta 0 is deterministic, eta 1 stochastic as DDPM"
    takes = ("eta",)

    @property
    def needs_noise(self) -> bool:
        return self.spec.eta > 0

    def step(self, predict: Predict, x_t, t, noise, memory=()) -> tuple:
        process = self.process
        pred_xstart = predict(x_t, t)["pred_xstart"]
        eps = process.predict_eps_from_xstart(x_t, t, pred_xstart)
        ab = process.gather(process.alphas_cumprod, t, x_t)
        ab_prev = process.gather(process.alphas_cumprod_prev, t, x_t)
        eta = tf.cast(self.spec.eta, x_t.dtype)
        sigma = eta * tf.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        mean = pred_xstart * tf.sqrt(ab_prev) + tf.sqrt(1.0 - ab_prev - sigma**2) * eps
        if noise is None:  # eta = 0: deterministic
            return mean, pred_xstart, ()
        return mean + not_final(t, x_t) * sigma * tf.cast(noise, x_t.dtype), pred_xstart, ()

    @classmethod
    def describe(cls, spec) -> list[str]:
        return [f"eta {spec.eta:g}"]
