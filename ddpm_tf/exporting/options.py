"""What an export produces: formats, the sampling spec and the checks on them, made before any work."""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

from ddpm_tf.checks import check_choice, check_float, check_int
from ddpm_tf.errors import InputError, InputTypeError
from ddpm_tf.sampling.spec import SamplingSpec

Format = Literal["saved_model", "tflite", "onnx"]
Function = Literal["sample", "denoise", "inpaint", "img2img", "guided"]
Quantization = Literal["none", "float16", "dynamic"]

FORMATS: tuple[str, ...] = get_args(Format)
FUNCTIONS: tuple[str, ...] = get_args(Function)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
ONNX_OPSETS = (17, 18)

EXPORT_SPEC = SamplingSpec(method="ddim", noise_source="portable")
"""The default sampling of an export: DDIM over all steps with the portable noise source."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Settings of an export.

    Attributes:
        formats: any of "saved_model", "tflite", "onnx".
        functions: which functions each format carries, in the order of `FUNCTIONS` (the first is
            the SavedModel's `serving_default`): "sample" (the sampler), "denoise" (the network),
            "inpaint" and "img2img" (editing uint8 images with the sampler's method), "guided"
            (the sampler steered by a classifier of noisy images, given to `export_model`).
        strength: img2img's SDEdit strength in (0, 1], fixed in the graph.
        resample, jump: inpaint's RePaint rounds and jump length, fixed in the graph (resample 1:
            plain replacement, any method; above 1 a one-step method, ancestral or DDIM).
        spec: the `SamplingSpec` the exported sampler runs (method, steps, eta, clipping, EMA or
            raw weights). Its noise source must be "portable": no TF random op may be exported.
        num_samples: the batch of the fixed-shape sampler (TFLite, ONNX) and of the verification.
        guidance_scale: the guidance scale used to verify a class-conditional sampler.
        classifier_scale: the classifier scale used to verify the guided sampler.
        tflite_quantization: "none", "float16" or "dynamic" (dynamic-range int8 weights).
        onnx_opset: 17 or 18.
        verify_seed: the seed of the verification run.
    """

    formats: tuple[Format, ...] = FORMATS
    functions: tuple[Function, ...] = ("sample", "denoise")
    spec: SamplingSpec = EXPORT_SPEC
    num_samples: int = 4
    guidance_scale: float = 2.0
    classifier_scale: float = 1.0
    strength: float = 0.5
    resample: int = 1
    jump: int = 10
    tflite_quantization: Quantization = "none"
    onnx_opset: int = 17
    verify_seed: tuple[int, int] = (0, 2024)  # what `--seed 2024` gives (rng.as_seed)

    def __post_init__(self) -> None:
        formats = tuple(dict.fromkeys(self.formats))
        if not formats or any(f not in FORMATS for f in formats):
            raise InputError(
                f"`formats` must be a non-empty subset of {FORMATS}, got {self.formats}."
            )
        object.__setattr__(self, "formats", formats)
        functions = set(self.functions) if isinstance(self.functions, tuple | list) else {None}
        if not functions or not functions <= set(FUNCTIONS):
            raise InputError(
                f"`functions` must be a non-empty subset of {FUNCTIONS}, got {self.functions!r}."
            )
        object.__setattr__(self, "functions", tuple(f for f in FUNCTIONS if f in functions))
        if check_float(self.strength, "strength", 0.0, 1.0) == 0.0:
            raise InputError("`strength` must be above 0: img2img at strength 0 is the identity.")
        check_int(self.resample, "resample")
        check_int(self.jump, "jump")
        if not isinstance(self.spec, SamplingSpec):
            raise InputTypeError(f"`spec` must be a SamplingSpec, got {type(self.spec).__name__}.")
        if self.spec.noise_source != "portable":
            raise InputError(
                f"exports need noise_source='portable' (no TF random op may be exported), got "
                f"{self.spec.noise_source!r}."
            )
        check_int(self.num_samples, "num_samples")
        check_float(self.guidance_scale, "guidance_scale")
        check_float(self.classifier_scale, "classifier_scale", 0.0)
        check_choice(self.tflite_quantization, QUANTIZATIONS, "tflite_quantization")
        if self.onnx_opset not in ONNX_OPSETS:
            raise InputError(f"`onnx_opset` must be one of {ONNX_OPSETS}, got {self.onnx_opset}.")
        if len(self.verify_seed) != 2:
            raise InputError(f"`verify_seed` must be a pair of ints, got {self.verify_seed!r}.")
