"""Helpers shared by the benchmarks: machine description and robust timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import tensorflow as tf


def machine() -> str:
    """One line naming the CPU, core count and library versions, printed with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
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


def _block(result: object) -> None:
    """Forces pending computation so the timing includes it."""
    for value in tf.nest.flatten(result):
        if hasattr(value, "numpy"):
            value.numpy()
