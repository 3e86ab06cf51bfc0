"""Guidance by a separate classifier of noisy images (Dhariwal & Nichol 2021).

| module | what |
| --- | --- |
| `noisy_classifier.py` | `NoisyClassifier`, the U-Net's encoder with attention pooling, read at every t |
| `classifier_guidance.py` | `ClassifierGuidance`, the loop hook that shifts each step by S grad log p(y \\| x_t) |

Classifier-free guidance, which needs no classifier, is `ddpm_tf.sampling.guided_denoiser`.
"""

from ddpm_tf.guidance.classifier_guidance import ClassifierGuidance, log_prob_gradient
from ddpm_tf.guidance.noisy_classifier import (
    CLASSIFIER_FILE,
    PRESETS,
    NoisyClassifier,
    classifier_preset,
    load_noisy_classifier,
)

__all__ = [
    "CLASSIFIER_FILE",
    "PRESETS",
    "ClassifierGuidance",
    "NoisyClassifier",
    "classifier_preset",
    "load_noisy_classifier",
    "log_prob_gradient",
]
