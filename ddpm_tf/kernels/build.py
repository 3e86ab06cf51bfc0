"""Compiles the package's C++ kernels against the installed TensorFlow, once per machine.

The source ships with the package (``*.cc`` beside this file). The first process that needs the
library compiles it with the system C++ compiler (``$CXX`` or ``g++``; its time:
docs/benchmarks.md) into a cache folder keyed by the source, the TensorFlow version, the compiler
and the CPU, and later processes load it from there. Nothing is downloaded. A missing compiler or a failed build leaves
the pure-TensorFlow layers in use and says why (:func:`status`).

The cache folder is ``$DDPM_TF_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/ddpm_tf/kernels``, else
``~/.cache/ddpm_tf/kernels``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import tensorflow as tf

SOURCES = ("group_norm.cc",)
LIBRARY_NAME = "libddpm_tf_kernels.so"

log = logging.getLogger("ddpm_tf.kernels")


def cache_root() -> Path:
    """The folder holding one compiled library per (source, TensorFlow, compiler, CPU) key."""
    if os.environ.get("DDPM_TF_KERNEL_CACHE"):
        return Path(os.environ["DDPM_TF_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpm_tf" / "kernels"


def compiler() -> str | None:
    """The C++ compiler to use (``$CXX`` or ``g++`` on PATH), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _cpu_identity() -> str:
    # -march=native code must not run on another CPU that shares the cache (a shared home).
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def arch_flags() -> list[str]:
    """Code generation for this CPU. On x86-64 AVX512-FP16 stays off: Eigen's headers in
    TensorFlow 2.21 do not compile with it under GCC 12."""
    if platform.machine() in ("x86_64", "AMD64"):
        return ["-march=native", "-mno-avx512fp16"]
    return ["-mcpu=native"] if platform.machine() in ("aarch64", "arm64") else []


def compile_flags() -> list[str]:
    """Flags of the compile step. -ffast-math lets GCC vectorise expf (libmvec); it is not used
    when linking, so the library does not change the process's floating-point mode."""
    return [
        *tf.sysconfig.get_compile_flags(),
        "-O3",
        "-ffast-math",
        "-fPIC",
        "-w",
        *arch_flags(),
    ]


def _source_dir() -> Path:
    return Path(__file__).resolve().parent


def library_key(cxx: str) -> str:
    """Hash of everything the compiled library depends on."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_source_dir() / name).read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    for part in (tf.__version__, version.stdout, " ".join(compile_flags()), _cpu_identity()):
        digest.update(part.encode())
    return digest.hexdigest()[:20]


def _compile(cxx: str, target: Path) -> None:
    """Compiles and links into a private folder beside ``target``, then renames it into place
    (two processes building at once each finish with a whole library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = []
        for name in SOURCES:
            obj = Path(tmp) / (Path(name).stem + ".o")
            _run([cxx, "-c", str(_source_dir() / name), "-o", str(obj), *compile_flags()])
            objects.append(str(obj))
        out = Path(tmp) / LIBRARY_NAME
        _run([cxx, "-shared", *objects, "-o", str(out), *tf.sysconfig.get_link_flags()])
        os.replace(out, target)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{done.stderr[-4000:]}")


@functools.cache
def load() -> tuple[object | None, str]:
    """(the loaded op library or None, a sentence on how it was found or why it is not in use)."""
    cxx = compiler()
    if cxx is None:
        return None, "no C++ compiler (set $CXX or install g++); using TensorFlow's GroupNorm ops"
    target = cache_root() / library_key(cxx) / LIBRARY_NAME
    built = False
    if not target.exists():
        log.info("ddpm_tf: compiling the fused kernels into %s (once per machine)", target)
        try:
            _compile(cxx, target)
        except (RuntimeError, OSError) as err:
            return None, f"the fused kernels did not compile ({err}); using TensorFlow's ops"
        built = True
    try:
        library = tf.load_op_library(str(target))
    except (tf.errors.NotFoundError, OSError) as err:
        return None, f"{target} did not load ({err}); delete it to rebuild"
    return library, f"{'compiled' if built else 'loaded'} {target}"
