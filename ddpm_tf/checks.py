"""Argument checks shared by the whole package: one wording for each kind of bad value.

Every check names the argument, the value received and what is allowed, and returns the value in
its canonical type so callers can store the result directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ddpm_tf.errors import InputError

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def check_int(value: object, arg: str, minimum: int = 1) -> int:
    """Returns ``value`` as an int if it is an integer (not a bool) >= ``minimum``.

    Raises:
        ValueError: naming ``arg``, the bound and the value received.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{arg} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: object, arg: str, low: float = -math.inf, high: float = math.inf) -> float:
    """Returns ``value`` as a float if it is a finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"{arg} must be a number in [{low}, {high}], got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(f"{arg} must be a number in [{low}, {high}], got {value!r}")
    return number


def check_bool(value: object, arg: str) -> bool:
    """Returns ``value`` if it is a bool (True or False; 0 and 1 are not accepted)."""
    if not isinstance(value, bool | np.bool_):
        raise InputError(f"{arg} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value: object, allowed: Sequence[str], arg: str) -> str:
    """Returns ``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise InputError(f"Unknown `{arg}` {value!r}; choose one of {tuple(allowed)}.")
    return value  # type: ignore[return-value]
