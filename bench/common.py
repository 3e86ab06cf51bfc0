"""Helpers shared by the benchmarks: machine description and robust timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import tensorflow as tf

VECTOR_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
"""The CPU flags that decide which kernels run fast (oneDNN's ISA levels)."""


def machine() -> str:
    """One line naming the CPU, its vector features, core count and library versions, printed with every result."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line for line in lines if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        pass
    vector = [name for name in VECTOR_FEATURES if name in flags]
    cpu += f" ({' '.join(vector) or 'no AVX2/AVX-512/AMX'})"
    import keras

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs (compilation excluded)."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def keras_train_step(
    preset: str,
    batch: int,
    *,
    precision: str = "float32",
    dropout: float | None = None,
    jit_compile: bool = False,
    learning_rate: float = 2e-4,
    distill: bool = False,
) -> tuple[object, tf.Tensor, Callable[[], None]]:
    """`DiffusionModel`'s Keras train step on a repeated in-memory batch: (model, images, step).

    `distill`: a `DistillationModel`'s step instead (progressive distillation, 4 steps from a
    64-step teacher: two teacher calls and one student step per image).

    A `preset` U-Net (its dropout rate replaced by `dropout` if given; seed 0) under Keras'
    `mixed_bfloat16` policy if `precision` is "bfloat16", compiled with ddpm-train's optimizer
    (`FusedAdam`), or Keras' Adam when the fused kernels are switched off (DDPM_TF_FUSED_KERNELS=0:
    the step with TensorFlow's standard ops only); `images` is the batch [batch, H, W, C] of uniform
    noise in [-1, 1], and `step()` runs one train step and waits for it.
    """
    import keras

    from ddpm_tf import DiffusionModel, from_preset, kernels
    from ddpm_tf.distillation import DistillationModel
    from ddpm_tf.optimizers import FusedAdam

    if precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    overrides = {} if dropout is None else {"dropout": dropout}
    network = from_preset(preset, **overrides)
    if distill:
        rounds = {"student_steps": 4, "teacher_steps": 64, "round_steps": 1000}
        model = DistillationModel(network, **rounds)
    else:
        model = DiffusionModel(network)
    adam = FusedAdam if kernels.enabled() else keras.optimizers.Adam
    model.compile(adam(learning_rate), jit_compile=jit_compile)
    images = tf.random.uniform((batch, *model.image_shape), -1.0, 1.0, seed=0)
    iterator = iter(tf.data.Dataset.from_tensors(images).repeat())
    model.make_train_function()  # Keras 3 sets `model.train_function` (and returns None)
    train_function = model.train_function

    def step() -> None:
        for value in train_function(iterator).values():
            value.numpy()

    return model, images, step


def _block(result: object) -> None:
    """Forces pending computation so the timing includes it."""
    for value in tf.nest.flatten(result):
        if hasattr(value, "numpy"):
            value.numpy()
