"""Helpers shared by the benchmarks: the machine's description, the one timing helper, process
memory and load readings, and ddpm_tf's train step as every benchmark builds it.

TensorFlow is imported only where a helper needs it, so that a PyTorch child process measures
PyTorch alone.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

VECTOR_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_tile",
)
"""The CPU flags that decide which kernels run fast (oneDNN's and PyTorch's ISA levels)."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def cpu_name() -> str:
    """The CPU's model name and its vector features, e.g. "AMD EPYC (avx2 fma avx512f ...)"."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line for line in f if line.startswith("model name")).split(":", 1)[1]
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    vector = [feature for feature in VECTOR_FEATURES if feature in flags]
    return f"{name.strip()} ({' '.join(vector) or 'no AVX2/AVX-512/AMX'})"


def native_bfloat16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where bfloat16 pays."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def machine(frameworks: str = "tensorflow") -> str:
    """One line naming the CPU, its vector features, core count and library versions, printed with
    every result. `frameworks`: "tensorflow", "torch" or "both"."""
    parts = [cpu_name(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}"]
    if frameworks in ("tensorflow", "both"):
        import keras
        import tensorflow as tf

        parts += [f"TensorFlow {tf.__version__}", f"Keras {keras.__version__}"]
    if frameworks in ("torch", "both"):
        import torch

        parts.append(f"PyTorch {torch.__version__}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------- timing
def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def time_calls(fn: Callable[[], object], repeats: int = 1, warmup: int = 0) -> dict[str, Any]:
    """Times `fn()`, waiting for any tensors it returns: `warmup` untimed calls (the first, which
    traces or compiles, timed apart as `first_s`), then `repeats` timed calls.

    Returns `median_s`, `min_s`, `max_s` and `times_s` (wall seconds per call), `cpu_s` (median
    process CPU seconds per call; CPU / wall is how many cores a call kept busy), `other_cores`
    (how many cores other processes kept busy during the timed calls, which slows them; None off
    Linux) and `first_s` (None without warm-up). With `repeats=1, warmup=0`: one call as a
    program run sees it, compilation included.
    """
    first = None
    for index in range(warmup):
        start = time.perf_counter()
        _block(fn())
        if index == 0:
            first = time.perf_counter() - start
    times, cpu_times = [], []
    busy_start, own_start = busy_cpu_seconds(), time.process_time()
    wall_start = time.perf_counter()
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        _block(fn())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    wall = time.perf_counter() - wall_start
    busy_end, own = busy_cpu_seconds(), time.process_time() - own_start
    other = None
    if busy_start is not None and busy_end is not None and wall > 0:
        other = max(busy_end - busy_start - own, 0.0) / wall
    return {
        "first_s": first,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "cpu_s": statistics.median(cpu_times),
        "other_cores": other,
    }


def _block(result: object) -> None:
    """Waits for the computation behind `result` (tensors, possibly nested) so timing includes it."""
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, list | tuple):
        for value in result:
            _block(value)
    elif hasattr(result, "numpy"):
        result.numpy()


# ------------------------------------------------------------------------------ child processes
RESULT_PREFIX = "BENCH_RESULT "
"""Starts the one line of a child process's output that holds its result, as JSON."""


def print_result(result: Any) -> None:
    """A child process's result, for `child_result` in its parent."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_result(cmd: list[str], env: dict[str, str], name: str) -> dict:
    """Runs `cmd` (a child of a benchmark, so that what it measures runs alone in its process)
    and returns the result it printed with `print_result`, with its `wall_s`; or `{"name": name,
    "error": ...}` with the end of its output."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["wall_s"] = wall
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return {"name": name, "error": f"exit code {proc.returncode}\n{tail}", "wall_s": wall}


# ------------------------------------------------------------------------------------- memory
def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------- TensorFlow
def onednn_enabled() -> bool:
    """Whether TF runs its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS, or TF's default for the CPU)."""
    from ddpm_tf import compat

    return compat.onednn_enabled()


def set_tf_threads(threads: int) -> dict[str, int]:
    """Intra- and inter-op threads of TensorFlow, as torch's are set beside it (call first)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def keras_train_step(
    preset: str,
    batch: int,
    *,
    precision: str = "float32",
    dropout: float | None = None,
    jit_compile: bool = False,
    learning_rate: float = 2e-4,
    distill: bool = False,
) -> tuple[object, object, Callable[[], None]]:
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
    import tensorflow as tf

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
