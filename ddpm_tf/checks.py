"""Argument checks shared by the evaluation modules, raising errors that name the argument."""

from __future__ import annotations

import numpy as np

__all__ = ["check_int"]


def check_int(value: object, arg: str, minimum: int = 1) -> int:
    """Returns ``value`` as an int if it is an integer (not a bool) >= ``minimum``.

    Raises:
        ValueError: naming ``arg``, the bound and the value received.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{arg} must be an int >= {minimum}, got {value!r}")
    return int(value)
