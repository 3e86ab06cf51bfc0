"""Exports of a trained `DiffusionModel` as SavedModel (TF Serving), TFLite and ONNX samplers.

Every export draws its noise with the portable generator, runs each artifact in its own runtime on
fixed inputs, compares with TensorFlow and writes `manifest.json`; see `export_model`.
"""

from ddpm_tf.exporting.options import EXPORT_SPEC, FORMATS, QUANTIZATIONS, ExportOptions
from ddpm_tf.exporting.pipeline import (
    MANIFEST,
    build_sampler,
    export_model,
    verify_export,
)
from ddpm_tf.exporting.runtime import Runner, open_function
from ddpm_tf.exporting.verify import ExportVerificationError, Tolerance
from ddpm_tf.runs import load_model  # a .keras file or a run directory

__all__ = [
    "EXPORT_SPEC",
    "FORMATS",
    "MANIFEST",
    "QUANTIZATIONS",
    "ExportOptions",
    "ExportVerificationError",
    "Runner",
    "Tolerance",
    "build_sampler",
    "export_model",
    "load_model",
    "open_function",
    "verify_export",
]
