"""Quiet start-up for the programs: TensorFlow's C++ start-up lines are held back unless --verbose.

Importing TensorFlow 2.21 writes lines such as "All log messages before absl::InitializeLog() is
called are written to STDERR", the oneDNN and cpu_feature_guard notices and "Could not find cuda
drivers" straight to file descriptor 2, from C++, before `TF_CPP_MIN_LOG_LEVEL` is read (and twice,
once per TensorFlow shared library). No setting turns them off, so a program of this package imports
TensorFlow with descriptor 2 pointed at /dev/null and then restores it: everything written after
the import, warnings and errors included, reaches the terminal as usual.

This runs from `ddpm_tf/__init__.py`, the first code of the package that any program executes, and
only when the process is one of the package's programs (a console script such as `ddpm-train`, or
`python -m ddpm_tf.<module>`) started without `--verbose`. Library users see TensorFlow as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

PROGRAMS = (
    "ddpm-train",
    "ddpm-sample",
    "ddpm-eval",
    "ddpm-classifier",
    "ddpm-distill",
    "ddpm-prepare",
    "ddpm-export",
    "ddpm-onednn",
)
VERBOSE_FLAG = "--verbose"


def running_program() -> bool:
    """Whether this process is one of the package's programs (console script or `python -m`)."""
    if sys.argv and os.path.basename(sys.argv[0]) in PROGRAMS:
        return True
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].startswith("ddpm_tf.")
    return False


@contextlib.contextmanager
def descriptor_silenced(fd: int = 2) -> Iterator[None]:
    """Points file descriptor `fd` at /dev/null for the duration, then restores it."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow_for_programs() -> None:
    """Imports TensorFlow silently if this process is a program run without --verbose, and keeps
    TensorFlow's Python logger to errors."""
    if "tensorflow" in sys.modules or not running_program() or VERBOSE_FLAG in sys.argv[1:]:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO and WARNING lines too
    with descriptor_silenced(2):
        import tensorflow as tf

        # Looking for GPUs is where "failed call to cuInit" is printed. It initializes no runtime:
        # logical devices and collective ops (multi-worker strategies) can still be set up after.
        tf.config.list_physical_devices("GPU")
    # TensorFlow's Python warnings about retracing: each compiled sampler (one per sampling spec) is
    # a new tf.function over the same method, which TensorFlow counts as retracing.
    tf.get_logger().setLevel("ERROR")
