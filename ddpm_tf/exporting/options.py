"""What an export produces: formats, sampler settings and the checks on them, made before any work."""

from __future__ import annotations

import dataclasses

from ddpm_tf.diffusion import SAMPLERS
from ddpm_tf.sampling import parse_steps

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic")
ONNX_OPSETS = (17, 18)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Settings of an export.

    Attributes:
        formats: any of "saved_model", "tflite", "onnx".
        sampler: "ancestral" or "ddim"; `eta` is DDIM's stochasticity in [0, 1].
        steps: None for all T steps, an int to respace, or "ddimN".
        use_ema: export the EMA weights (True) or the raw trained ones.
        num_samples: the batch of the fixed-shape sampler (TFLite, ONNX) and of the verification.
        guidance_scale: the guidance scale used to verify a class-conditional sampler.
        clip_denoised: clip x_0 predictions to [-1, 1] while sampling.
        tflite_quantization: "none", "float16" or "dynamic" (dynamic-range int8 weights).
        onnx_opset: 17 or 18.
        verify_seed: the seed of the verification run.
    """

    formats: tuple[str, ...] = FORMATS
    sampler: str = "ddim"
    steps: int | str | None = None
    eta: float = 0.0
    use_ema: bool = True
    num_samples: int = 4
    guidance_scale: float = 2.0
    clip_denoised: bool = True
    tflite_quantization: str = "none"
    onnx_opset: int = 17
    verify_seed: tuple[int, int] = (2024, 7)

    def __post_init__(self) -> None:
        formats = tuple(dict.fromkeys(self.formats))
        if not formats or any(f not in FORMATS for f in formats):
            raise ValueError(
                f"`formats` must be a non-empty subset of {FORMATS}, got {self.formats}."
            )
        object.__setattr__(self, "formats", formats)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Unknown `sampler` {self.sampler!r}; choose one of {SAMPLERS}.")
        object.__setattr__(self, "steps", parse_steps(self.steps))
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"`eta` must be in [0, 1], got {self.eta}.")
        if self.sampler == "ancestral" and self.eta:
            raise ValueError("`eta` applies to the ddim sampler only; leave it 0 for ancestral.")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int):
            raise ValueError(f"`num_samples` must be a positive int, got {self.num_samples!r}.")
        if self.num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive int, got {self.num_samples}.")
        if self.tflite_quantization not in QUANTIZATIONS:
            raise ValueError(
                f"`tflite_quantization` must be one of {QUANTIZATIONS}, got {self.tflite_quantization!r}."
            )
        if self.onnx_opset not in ONNX_OPSETS:
            raise ValueError(f"`onnx_opset` must be one of {ONNX_OPSETS}, got {self.onnx_opset}.")
        if len(self.verify_seed) != 2:
            raise ValueError(f"`verify_seed` must be a pair of ints, got {self.verify_seed!r}.")
