"""ddpm-tf: denoising diffusion probabilistic models for TensorFlow 2 and Keras 3.

The mathematics (`GaussianDiffusion`, schedules, timestep samplers) needs only TensorFlow and
tensorflow-probability; the Keras network and model live in `ddpm_tf.unet` and `ddpm_tf.model`.
"""

from ddpm_tf.diffusion import (
    LOSS_TYPES,
    MODEL_MEAN_TYPES,
    MODEL_VAR_TYPES,
    GaussianDiffusion,
)
from ddpm_tf.schedules import SCHEDULES, get_beta_schedule, respaced_betas, space_timesteps
from ddpm_tf.timesteps import (
    LossSecondMomentResampler,
    TimestepSampler,
    UniformSampler,
    create_named_sampler,
)

__version__ = "0.1.0"

__all__ = [
    "LOSS_TYPES",
    "MODEL_MEAN_TYPES",
    "MODEL_VAR_TYPES",
    "SCHEDULES",
    "GaussianDiffusion",
    "LossSecondMomentResampler",
    "TimestepSampler",
    "UniformSampler",
    "create_named_sampler",
    "get_beta_schedule",
    "respaced_betas",
    "space_timesteps",
]
