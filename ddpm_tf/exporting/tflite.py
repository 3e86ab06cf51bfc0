"""TFLite conversion from builtin ops only (no Flex, no custom ops), with optional quantization."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tensorflow as tf

from ddpm_tf.exporting.graphs import ExportedFunction
from ddpm_tf.exporting.saved_model import write_saved_model


def convert_tflite(function: ExportedFunction, quantization: str = "none") -> bytes:
    """A TFLite flatbuffer with one signature named after `function`, from TFLITE_BUILTINS only.

    `quantization`: "none", "float16" (float16 weights) or "dynamic" (dynamic-range int8 weights).
    """
    with tempfile.TemporaryDirectory() as tmp:
        key = write_saved_model(tmp, [function])[function.name]
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[key])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = False
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    return rename_signature(flatbuffer, key, function.name)


def rename_signature(flatbuffer: bytes, old: str, new: str) -> bytes:
    """The flatbuffer with its signature key `old` renamed to `new`."""
    if old == new:
        return flatbuffer
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    for signature in model.signatureDefs:
        if signature.signatureKey.decode() == old:
            signature.signatureKey = new.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes of a TFLite model: builtin names, or "CUSTOM:<name>" (Flex ops included)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for code in model.operatorCodes:
        op = max(code.builtinCode, code.deprecatedBuiltinCode)
        if op == schema.BuiltinOperator.CUSTOM:
            names.append("CUSTOM:" + code.customCode.decode())
        else:
            names.append(builtin.get(op, str(op)))
    return names


def check_builtin_only(flatbuffer: bytes) -> list[str]:
    """Raises if the model has a custom or Flex op; returns its operator names."""
    names = operator_names(flatbuffer)
    custom = [n for n in names if n.startswith("CUSTOM:")]
    if custom:
        raise RuntimeError(
            f"The TFLite model uses non-builtin ops {custom}; it needs Flex/custom kernels."
        )
    return names


def write_tflite(
    path: str | Path, function: ExportedFunction, quantization: str = "none"
) -> list[str]:
    """Converts, checks for builtin-only ops and writes `path`; returns the operator names."""
    flatbuffer = convert_tflite(function, quantization)
    names = check_builtin_only(flatbuffer)
    Path(path).write_bytes(flatbuffer)
    return names
