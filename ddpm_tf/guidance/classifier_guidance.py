"""Classifier guidance (Dhariwal & Nichol 2021): sampling steered by grad log p(y | x_t, t).

With a classifier of noisy images, the score of the class-conditional data is the model's score
plus grad_x log p(y | x_t, t); `ClassifierGuidance` adds S times that gradient g to the model's
p(x_{t-1} | x_t), through the loop's `Hooks.guide`, in the two forms the methods read:

- the mean, for ancestral sampling: mean + S Sigma g (Sigma the step's variance), guided-diffusion's
  `condition_mean`;
- the x_0 prediction, for DDIM, DPM-Solver++ and UniPC: eps - S sqrt(1 - abar_t) g, which is
  x_0 + S (1 - abar_t) / sqrt(abar_t) g (Tweedie's formula with the shifted score),
  guided-diffusion's `condition_score`.

Both are applied after the x_0 bounds (clipping, thresholding), as the reference does. S = 1 with
an exact classifier samples p(x | y); S > 1 sharpens toward p(x) p(y | x)^S. The classifier is any
callable `classifier([x_t, t])` -> logits [B, K] (a `NoisyClassifier`, or a closed form in tests),
called with the original schedule's timesteps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tensorflow as tf

if TYPE_CHECKING:
    from ddpm_tf.diffusion import GaussianDiffusion

__all__ = ["ClassifierGuidance", "log_prob_gradient"]

Classifier = Callable[[list], Any]
"""classifier([x_t, t]) -> logits [B, K]: x_t [B, H, W, C], t [B] the original timesteps."""


def log_prob_gradient(classifier: Classifier, x_t: tf.Tensor, t: tf.Tensor, labels) -> tf.Tensor:
    """grad_x log p(labels | x_t, t) [B, H, W, C] in x_t's dtype: the log-softmax of the logits at
    each row's label, differentiated in x_t's dtype (a Keras classifier casts its input to its own
    compute dtype); each row's log-probability depends on its own image alone."""
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        logits = tf.cast(classifier([x_t, t]), x_t.dtype)
        chosen = tf.gather(tf.nn.log_softmax(logits), tf.cast(labels, tf.int32), batch_dims=1)
    return tape.gradient(chosen, x_t)


@dataclasses.dataclass(frozen=True)
class ClassifierGuidance:
    """The shift of p(x_{t-1} | x_t) toward `labels` [B] by `scale` S times the classifier's
    gradient; a `Hooks.guide`: (process, prediction, x_t, t) -> prediction, t process indices."""

    classifier: Classifier
    labels: Any
    scale: Any

    def __call__(
        self, process: GaussianDiffusion, prediction: dict, x_t: tf.Tensor, t: tf.Tensor
    ) -> dict:
        grad = log_prob_gradient(self.classifier, x_t, process.model_timesteps(t), self.labels)
        shift = tf.cast(self.scale, x_t.dtype) * grad
        abar = process.gather(process.alphas_cumprod, t, x_t)
        variance = tf.exp(prediction["log_variance"])
        return {
            **prediction,
            "mean": prediction["mean"] + variance * shift,
            "pred_xstart": prediction["pred_xstart"] + (1.0 - abar) / tf.sqrt(abar) * shift,
        }
