"""Editing with a trained model, built on the sampling loop.

| module | what |
| --- | --- |
| `inpaint.py` | inpainting: known pixels kept by replacement, RePaint's resampling jumps |
| `img2img.py` | SDEdit: noise part of the way with q(x_t given x_0), sample back with any method |
| `inversion.py` | DDIM inversion to latents x_T, decoding, and spherical interpolation of latents |

Each function takes a `GaussianDiffusion` and a denoise_fn(x_t, t) (so the exact denoisers of
tests/oracle.py test them); `DiffusionModel.inpaint`, `img2img`, `invert`, `decode` and `interpolate` call
them with the model's (EMA) network, labels and guidance.
"""

from ddpm_tf.editing.img2img import img2img, img2img_graph, remaining_process
from ddpm_tf.editing.inpaint import (
    check_mask,
    inpaint,
    inpaint_graph,
    inpainting_path,
    repaint_path,
)
from ddpm_tf.editing.inversion import decode, interpolate, inversion_spec, invert, slerp

__all__ = [
    "check_mask",
    "decode",
    "img2img",
    "img2img_graph",
    "inpaint",
    "inpaint_graph",
    "inpainting_path",
    "interpolate",
    "inversion_spec",
    "invert",
    "remaining_process",
    "repaint_path",
    "slerp",
]
