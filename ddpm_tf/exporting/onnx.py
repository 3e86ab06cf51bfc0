"""ONNX conversion through tf2onnx, failing on what tf2onnx only logs (unsupported ops).

tf2onnx has no handler for two ops that the classifier's gradient in the guided sampler holds:
RsqrtGrad (of GroupNorm's rsqrt) and ShapeN (of a convolution's input gradient);
`GRADIENT_HANDLERS` writes them in standard ONNX ops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from onnx import TensorProto

from ddpm_tf.exporting.graphs import ExportedFunction

STANDARD_DOMAINS = ("", "ai.onnx")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _graph_ops(graph) -> list[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs (loop bodies, branches) included."""
    ops = []
    for node in graph.node:
        ops.append((node.domain, node.op_type))
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                ops.extend(_graph_ops(attribute.g))
            for sub in attribute.graphs:
                ops.extend(_graph_ops(sub))
    return ops


def check_standard_ops(model) -> list[str]:
    """Raises if a node of `model` is outside the standard ONNX domain; returns the op types."""
    ops = _graph_ops(model.graph)
    custom = sorted({f"{d}:{op}" for d, op in ops if d not in STANDARD_DOMAINS})
    if custom:
        raise RuntimeError(
            f"The ONNX model uses non-standard ops {custom}; onnxruntime lacks them."
        )
    return sorted({op for _, op in ops})


def _rsqrt_grad(ctx, node, name, args):
    """RsqrtGrad(y, dy) = dy * (-0.5 y^3) for y = rsqrt(x), as three Muls."""
    del name, args
    y, dy = node.input
    cube = ctx.make_node("Mul", [ctx.make_node("Mul", [y, y]).output[0], y]).output[0]
    half = ctx.make_const(f"{node.name}_minus_half", np.array(-0.5, np.float32)).output[0]
    scaled = ctx.make_node("Mul", [cube, half]).output[0]
    node.type = "Mul"
    ctx.replace_inputs(node, [scaled, dy])
    return node


def _shape_n(ctx, node, name, args):
    """ShapeN(x_1, ..., x_N) = (Shape(x_1), ..., Shape(x_N)), each cast to the output's type."""
    del name, args
    for index, (source, output) in enumerate(zip(node.input, node.output, strict=True)):
        dtype = ctx.get_dtype(output)
        shape = ctx.make_node("Shape", [source], name=f"{node.name}_shape{index}")
        ctx.set_dtype(shape.output[0], TensorProto.INT64)
        cast = ctx.make_node(
            "Cast", [shape.output[0]], attr={"to": dtype}, name=f"{node.name}_cast{index}"
        )
        ctx.set_dtype(cast.output[0], dtype)
        ctx.copy_shape(output, cast.output[0])
        ctx.replace_all_inputs(output, cast.output[0])
    ctx.remove_node(node.name)


GRADIENT_HANDLERS = {"RsqrtGrad": (_rsqrt_grad, []), "ShapeN": (_shape_n, [])}
"""tf2onnx handlers (`custom_op_handlers`) of the gradient ops it lacks."""


def convert_onnx(function: ExportedFunction, opset: int):
    """The ONNX ModelProto of `function`; raises on any op tf2onnx could not convert."""
    import tf2onnx

    capture = _Capture()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(capture)
    try:
        model, _ = tf2onnx.convert.from_function(
            function.fn,
            input_signature=function.signature,
            opset=opset,
            custom_op_handlers=GRADIENT_HANDLERS,
        )
    finally:
        logger.removeHandler(capture)
    failures = [m for m in capture.messages if "unsupported" in m.lower() or "failed" in m.lower()]
    if failures:
        raise RuntimeError(
            f"tf2onnx could not convert `{function.name}` completely: " + " | ".join(failures)
        )
    check_standard_ops(model)
    return model


def write_onnx(path: str | Path, function: ExportedFunction, opset: int) -> list[str]:
    """Converts, checks and writes `path`; returns the op types."""
    model = convert_onnx(function, opset)
    Path(path).write_bytes(model.SerializeToString())
    return check_standard_ops(model)
