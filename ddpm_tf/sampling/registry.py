"""The table of sampling methods: every name a user may write, and the class that runs it.

`SamplingSpec` checks its method and settings against this table, the loop builds the method's
class from it, and the programs take their `--method` choices and `ddpm-eval --compare` its names
from it. A new method is a module of this package with a `SamplingMethod` subclass, added here
(and to `Method`, the type checkers' view of the same names); `tests/test_sampling_methods.py` then
runs it against the exact answers of Gaussian data.
"""

from __future__ import annotations

from typing import Literal, get_args

from ddpm_tf.errors import InputError
from ddpm_tf.sampling.ancestral import Ancestral
from ddpm_tf.sampling.ddim import DDIM
from ddpm_tf.sampling.dpm_solver import DPMSolverPlusPlus
from ddpm_tf.sampling.method import SamplingMethod
from ddpm_tf.sampling.unipc import UniPC

__all__ = ["METHODS", "METHOD_SETTINGS", "Method", "REGISTRY", "method_class"]

Method = Literal["ancestral", "ddim", "dpm_solver++", "unipc"]

REGISTRY: dict[str, type[SamplingMethod]] = {
    cls.name: cls for cls in (Ancestral, DDIM, DPMSolverPlusPlus, UniPC)
}
if tuple(REGISTRY) != get_args(Method):  # one list of names: fail at import, not at use
    raise ImportError(f"`Method` {get_args(Method)} must list the registry {tuple(REGISTRY)}.")

METHODS: tuple[str, ...] = tuple(REGISTRY)
METHOD_SETTINGS: tuple[str, ...] = tuple(
    dict.fromkeys(name for cls in REGISTRY.values() for name in cls.takes)
)
"""The `SamplingSpec` settings that apply to some methods only (each method's `takes`)."""


def method_class(name: str) -> type[SamplingMethod]:
    """The class of method `name`."""
    if name not in REGISTRY:
        raise InputError(f"Unknown `method` {name!r}; choose one of {METHODS}.")
    return REGISTRY[name]
