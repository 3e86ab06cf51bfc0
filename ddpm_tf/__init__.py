"""ddpm-tf: denoising diffusion probabilistic models for TensorFlow 2 and Keras 3.

The mathematics (`GaussianDiffusion`, schedules, timestep samplers) is pure TensorFlow and
tensorflow-probability; the Keras side is the `UNet` (`ddpm_tf.unet`, layers in `ddpm_tf.layers`),
the trainable `DiffusionModel` (`ddpm_tf.model`; its optimizers in `ddpm_tf.optimizers`) and the compiled samplers (`ddpm_tf.sampling`),
each configured by one `SamplingSpec`. The programs (ddpm-train, ddpm-export, ...) live in
`ddpm_tf.training` and `ddpm_tf.export`; docs/ARCHITECTURE.md maps every module.
"""

from ddpm_tf import _startup, onednn

onednn.apply()  # TF_ENABLE_ONEDNN_OPTS as measured on this CPU, before TensorFlow loads
_startup.quiet_tensorflow_for_programs()  # before anything below imports TensorFlow

from ddpm_tf.diffusion import (  # noqa: E402
    LOSS_TYPES,
    MODEL_MEAN_TYPES,
    MODEL_VAR_TYPES,
    GaussianDiffusion,
)
from ddpm_tf.model import DiffusionModel  # noqa: E402
from ddpm_tf.optimizers import FusedAdam, WarmupSchedule, default_optimizer  # noqa: E402
from ddpm_tf.sampling import (  # noqa: E402
    METHODS,
    NOISE_SOURCES,
    Sampler,
    SamplingSpec,
    every_class,
    generate_uint8,
    guided_denoiser,
    sample_per_replica,
)
from ddpm_tf.schedules import SCHEDULES, get_beta_schedule, respaced_betas  # noqa: E402
from ddpm_tf.spacing import (  # noqa: E402
    AllSteps,
    LogSNRSteps,
    SectionSteps,
    StrideSteps,
    TrailingSteps,
    UniformSteps,
    parse_steps,
    space_timesteps,
)
from ddpm_tf.timesteps import (  # noqa: E402
    TIMESTEP_SAMPLERS,
    LossSecondMomentResampler,
    TimestepSampler,
    UniformSampler,
    create_timestep_sampler,
)
from ddpm_tf.unet import PRESETS, UNet, from_preset  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AllSteps",
    "LOSS_TYPES",
    "LogSNRSteps",
    "SectionSteps",
    "StrideSteps",
    "TrailingSteps",
    "UniformSteps",
    "parse_steps",
    "METHODS",
    "MODEL_MEAN_TYPES",
    "MODEL_VAR_TYPES",
    "NOISE_SOURCES",
    "PRESETS",
    "SCHEDULES",
    "TIMESTEP_SAMPLERS",
    "DiffusionModel",
    "FusedAdam",
    "GaussianDiffusion",
    "LossSecondMomentResampler",
    "Sampler",
    "SamplingSpec",
    "TimestepSampler",
    "UNet",
    "UniformSampler",
    "WarmupSchedule",
    "create_timestep_sampler",
    "default_optimizer",
    "every_class",
    "from_preset",
    "generate_uint8",
    "get_beta_schedule",
    "guided_denoiser",
    "respaced_betas",
    "sample_per_replica",
    "space_timesteps",
]
