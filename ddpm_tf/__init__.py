"""ddpm-tf: denoising diffusion probabilistic models for TensorFlow 2 and Keras 3.

The mathematics (`GaussianDiffusion`, schedules, timestep samplers) is pure TensorFlow and
tensorflow-probability; the Keras side is the `UNet` (`ddpm_tf.unet`, layers in `ddpm_tf.layers`),
the trainable `DiffusionModel` (`ddpm_tf.model`) and the compiled samplers (`ddpm_tf.sampling`).
"""

from ddpm_tf.diffusion import (
    LOSS_TYPES,
    MODEL_MEAN_TYPES,
    MODEL_VAR_TYPES,
    GaussianDiffusion,
)
from ddpm_tf.model import DiffusionModel, WarmupSchedule, default_optimizer
from ddpm_tf.sampling import Sampler, guided_denoiser, sample_per_replica
from ddpm_tf.schedules import SCHEDULES, get_beta_schedule, respaced_betas, space_timesteps
from ddpm_tf.timesteps import (
    LossSecondMomentResampler,
    TimestepSampler,
    UniformSampler,
    create_named_sampler,
)
from ddpm_tf.unet import PRESETS, UNet, from_preset

__version__ = "0.1.0"

__all__ = [
    "LOSS_TYPES",
    "MODEL_MEAN_TYPES",
    "MODEL_VAR_TYPES",
    "SCHEDULES",
    "PRESETS",
    "DiffusionModel",
    "GaussianDiffusion",
    "LossSecondMomentResampler",
    "TimestepSampler",
    "Sampler",
    "UNet",
    "UniformSampler",
    "WarmupSchedule",
    "default_optimizer",
    "from_preset",
    "guided_denoiser",
    "sample_per_replica",
    "create_named_sampler",
    "get_beta_schedule",
    "respaced_betas",
    "space_timesteps",
]
