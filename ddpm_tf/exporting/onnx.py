"""ONNX conversion through tf2onnx, failing on what tf2onnx only logs (unsupported ops)."""

from __future__ import annotations

import logging
from pathlib import Path

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


def convert_onnx(function: ExportedFunction, opset: int):
    """The ONNX ModelProto of `function`; raises on any op tf2onnx could not convert."""
    import tf2onnx

    capture = _Capture()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(capture)
    try:
        model, _ = tf2onnx.convert.from_function(
            function.fn, input_signature=function.signature, opset=opset
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
