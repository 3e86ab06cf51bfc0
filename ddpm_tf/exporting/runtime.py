"""Running an exported function in its own runtime: TensorFlow (SavedModel), LiteRT, onnxruntime.

`open_function(format, path, name)` gives a `Runner`: call it with a dict of NumPy inputs, get a dict
of NumPy outputs; `signature()` describes the inputs and outputs as the artifact declares them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddpm_tf.errors import InputError

Feeds = dict[str, np.ndarray]
TensorInfo = dict[str, object]  # {"shape": [...], "dtype": "..."}; -1 or None for a free size


class Runner:
    """A loaded exported function."""

    def __init__(
        self,
        call: Callable[[Feeds], Feeds],
        inputs: dict[str, TensorInfo],
        outputs: dict[str, TensorInfo],
    ):
        self._call = call
        self.inputs = inputs
        self.outputs = outputs

    def __call__(self, feeds: Feeds) -> Feeds:
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise InputError(
                f"Missing inputs {sorted(missing)}; the function takes {sorted(self.inputs)}."
            )
        feeds = {k: np.asarray(v, dtype=self.inputs[k]["dtype"]) for k, v in feeds.items()}
        return self._call(feeds)

    def signature(self) -> dict[str, dict[str, TensorInfo]]:
        return {"inputs": self.inputs, "outputs": self.outputs}


def _info(shape, dtype) -> TensorInfo:
    return {
        "shape": [None if s is None or s < 0 else int(s) for s in shape],
        "dtype": str(np.dtype(dtype)),
    }


def saved_model_runner(path: str | Path, key: str) -> Runner:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[key]

    def describe(specs) -> dict[str, TensorInfo]:
        return {
            k: _info(spec.shape.as_list(), spec.dtype.as_numpy_dtype) for k, spec in specs.items()
        }

    inputs, outputs = describe(fn.structured_input_signature[1]), describe(fn.structured_outputs)

    def call(feeds: Feeds) -> Feeds:
        return {
            k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()
        }

    return Runner(call, inputs, outputs)


def tflite_runner(path: str | Path, key: str, num_threads: int | None = None) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner(key)
    inputs = {
        k: _info(d["shape_signature"], d["dtype"]) for k, d in runner.get_input_details().items()
    }
    outputs = {
        k: _info(d["shape_signature"], d["dtype"]) for k, d in runner.get_output_details().items()
    }
    return Runner(lambda feeds: dict(runner(**feeds)), inputs, outputs)


_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int64)": np.int64,
}


def onnx_runner(path: str | Path, num_threads: int | None = None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def describe(args) -> dict[str, TensorInfo]:
        return {
            a.name: _info([s if isinstance(s, int) else -1 for s in a.shape], _ONNX_TYPES[a.type])
            for a in args
        }

    names = [o.name for o in session.get_outputs()]

    def call(feeds: Feeds) -> Feeds:
        return dict(zip(names, session.run(names, feeds), strict=True))

    return Runner(call, describe(session.get_inputs()), describe(session.get_outputs()))


def open_function(
    format: str, path: str | Path, key: str, num_threads: int | None = None
) -> Runner:
    """The function `key` of an artifact: a SavedModel signature key, a TFLite signature key, or
    (ONNX, one function per file) any name."""
    if format == "saved_model":
        return saved_model_runner(path, key)
    if format == "tflite":
        return tflite_runner(path, key, num_threads)
    if format == "onnx":
        return onnx_runner(path, num_threads)
    raise InputError(f"Unknown `format` {format!r}; choose saved_model, tflite or onnx.")
