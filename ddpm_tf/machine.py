"""What the package keeps per machine, without importing TensorFlow: the cache folder and the
identity of the CPU that a cached result belongs to.

The fused kernels' libraries (`ddpm_tf.kernels.build`) and the measured choice of TensorFlow's CPU
code path (`ddpm_tf.onednn`) live in ``$DDPM_TF_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/ddpm_tf/kernels``, else ``~/.cache/ddpm_tf/kernels``. Both are keyed by the CPU
(`cpu_identity`): a home folder shared by machines of different CPUs keeps one entry per CPU.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cache_root() -> Path:
    """The folder holding what is built or measured once per machine."""
    if os.environ.get("DDPM_TF_KERNEL_CACHE"):
        return Path(os.environ["DDPM_TF_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpm_tf" / "kernels"


def cpu_identity() -> str:
    """The CPU's model name and feature flags (Linux /proc/cpuinfo), else the platform's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))
