"""Fused CPU kernels for the U-Net's hot spots, with TensorFlow's own ops as the fallback.

On a CPU, TensorFlow runs GroupNorm (+ SiLU) as a chain of reductions and element-wise kernels,
each a pass over the activation; in a small U-Net's train step that chain costs about as much as
the convolutions (``bench/step_profile.py``). :func:`group_norm` does the same arithmetic in one
C++ kernel each way (``group_norm.cc``, built on first use by :mod:`ddpm_tf.kernels.build`).

A layer asks :func:`active` when its graph is traced; the kernels are used when all of these hold:

- the environment variable ``DDPM_TF_FUSED_KERNELS`` is unset, ``1`` or ``on`` (``0``/``off``
  turns them off for the process);
- the code is not inside :func:`reference_only` (exports use it: TF Serving, TFLite and ONNX
  know only standard TensorFlow ops);
- no GPU is visible (the kernels are CPU kernels) and the graph is not compiled with XLA (they
  have no XLA kernel: ``jit_compile=True`` functions keep TensorFlow's ops);
- the library compiled and loaded (:func:`status` says if not; whatever went wrong in the build
  is one warning line on the logger ``ddpm_tf.kernels``, see :mod:`ddpm_tf.kernels.build`).

Results agree with TensorFlow's ops to float32 rounding, not bit for bit; for a given machine and
library each kernel is deterministic, so a run stays bit-reproducible from its seed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import tensorflow as tf

from ddpm_tf import compat
from ddpm_tf.errors import InputError
from ddpm_tf.kernels import build

__all__ = ["active", "enabled", "group_norm", "reference_only", "status"]

ENV_SWITCH = "DDPM_TF_FUSED_KERNELS"
_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")
_reference_depth = 0


def enabled() -> bool:
    """The process-wide switch ``$DDPM_TF_FUSED_KERNELS`` (default on)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value not in _ON + _OFF:
        raise InputError(
            f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r} is not a switch: use 1/on (default) or 0/off."
        )
    return value in _ON


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Inside this block, graphs are traced with TensorFlow's standard ops only."""
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


def active() -> bool:
    """Whether a layer traced now should use the fused kernels (see the module docstring)."""
    return (
        _reference_depth == 0
        and enabled()
        and not tf.config.list_logical_devices("GPU")
        and not compat.in_xla_compilation()
        and build.load()[0] is not None
    )


def status() -> str:
    """One line on whether the fused kernels are in use in this process, and why not."""
    if not enabled():
        return f"TensorFlow's ops (fused kernels off: ${ENV_SWITCH})"
    library, why = build.load()
    return f"fused kernels ({why})" if library is not None else why


def _library():
    library, why = build.load()
    if library is None:
        raise RuntimeError(f"ddpm_tf.kernels: {why}")
    return library


def group_norm(
    x: tf.Tensor,
    scale: tf.Tensor,
    offset: tf.Tensor,
    groups: int,
    epsilon: float,
    silu: bool,
    dropout: float = 0.0,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """``drop(act(GroupNorm(x) * scale + offset))`` over the last axis, in one kernel.

    Args:
        x: ``[N, ..., C]`` float32, bfloat16 or float16; statistics are taken per sample over
            the middle axes and the ``C / groups`` channels of each group, in float32.
        scale, offset: ``[N, C]`` float32, the per-sample affine map after normalising (a plain
            GroupNorm passes gamma and beta broadcast over the batch).
        groups: number of groups; must divide ``C``.
        epsilon: added to the variance.
        silu: apply ``v * sigmoid(v)`` to the result.
        dropout: inverted dropout rate in [0, 1) applied last (0: none). The mask is the hash
            of :mod:`ddpm_tf.dropout` (the same bits as ``ddpm_tf.dropout.keep_mask``), so a seed
            gives the same mask on every run, thread count and path; the gradient recomputes it.
        seed: ``[3]`` int64 (key, salt, first global row) of the mask, required when
            ``dropout > 0`` (``ddpm_tf.dropout.layer_words`` gives the key and salt).

    Returns:
        ``[N, ..., C]`` in the dtype of ``x``. Differentiable in all three tensors.
    """
    if dropout and seed is None:
        raise InputError("group_norm: dropout > 0 needs a `seed` ([3] int64).")
    seed = tf.zeros([3], tf.int64) if seed is None else tf.cast(seed, tf.int64)
    y, _, _ = _library().ddpm_group_norm(
        x,
        scale,
        offset,
        seed,
        groups=int(groups),
        epsilon=float(epsilon),
        silu=bool(silu),
        dropout=float(dropout),
    )
    return y


@tf.RegisterGradient("DdpmGroupNorm")
def _group_norm_grad(op, dy, _dmean, _drstd):
    # The saved statistics (outputs 1 and 2) are used by the gradient kernel, not by the model;
    # the seed (input 3) has no gradient.
    grads = _library().ddpm_group_norm_grad(
        dy,
        op.inputs[0],
        op.inputs[1],
        op.inputs[2],
        op.outputs[1],
        op.outputs[2],
        op.inputs[3],
        groups=op.get_attr("groups"),
        silu=op.get_attr("silu"),
        dropout=op.get_attr("dropout"),
    )
    return [*grads, None]
