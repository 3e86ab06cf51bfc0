"""Editing with a trained model, built on the sampling loop.

| module | what |
| --- | --- |
| `img2img.py` | SDEdit: noise part of the way with q(x_t given x_0), sample back with any method |
| `inversion.py` | DDIM inversion to latents x_T, decoding, and spherical interpolation of latents |

Each function takes a `GaussianDiffusion` and a denoise_fn(x_t, t) (so the exact denoisers of
tests/oracle.py test them); `DiffusionModel.img2img`, `invert`, `decode` and `interpolate` call
them with the model's (EMA) network, labels and guidance.
"""

from ddpm_tf.editing.img2img import img2img, remaining_process
from ddpm_tf.editing.inversion import decode, interpolate, inversion_spec, invert, slerp

__all__ = [
    "decode",
    "img2img",
    "interpolate",
    "inversion_spec",
    "invert",
    "remaining_process",
    "slerp",
]
