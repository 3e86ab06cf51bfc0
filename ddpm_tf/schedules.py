"""Beta schedules and the betas of a respaced process.

Every table here is a float64 NumPy array: the products of many (1 - beta) factors lose digits in
float32, and the tables are cast to the compute dtype only when they are gathered for a batch.

Which steps a respaced process keeps is `ddpm_tf.spacing` (`space_timesteps`, re-exported here,
follows improved-diffusion's rules so that "ddim50" or "10,20,30" select the published steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError
from ddpm_tf.spacing import space_timesteps

__all__ = [
    "SCHEDULES",
    "betas_from_alpha_bar",
    "get_beta_schedule",
    "respaced_betas",
    "space_timesteps",
    "validate_betas",
]

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")

# Ho et al.'s linear endpoints at T=1000; other T scale them by 1000/T so that the total noise matches.
_LINEAR_START = 1e-4
_LINEAR_END = 0.02
_COSINE_OFFSET = 0.008
_MAX_BETA = 0.999


def validate_betas(betas: Iterable[float] | np.ndarray, name: str = "betas") -> np.ndarray:
    """Returns `betas` as a float64 vector after checking it is 1-D, finite and inside (0, 1)."""
    arr = np.asarray(betas, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"`{name}` must be a non-empty 1-D array, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InputError(
            f"`{name}` must be finite; got non-finite values at {np.flatnonzero(~np.isfinite(arr))[:5]}."
        )
    bad = np.flatnonzero((arr <= 0.0) | (arr >= 1.0))
    if bad.size:
        raise InputError(
            f"`{name}` must lie strictly inside (0, 1); index {int(bad[0])} has {float(arr[bad[0]])!r} "
            f"({bad.size} bad values). Each beta_t is the variance of one forward step."
        )
    return arr


def _linear_endpoints(num_timesteps: int) -> tuple[float, float]:
    scale = 1000.0 / num_timesteps
    return scale * _LINEAR_START, scale * _LINEAR_END


def betas_from_alpha_bar(
    alpha_bar: Callable[[np.ndarray], np.ndarray], num_timesteps: int, max_beta: float = _MAX_BETA
) -> np.ndarray:
    """Betas whose cumulative product follows `alpha_bar` on [0, 1]: beta_i = 1 - abar((i+1)/T) / abar(i/T)."""
    grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    ab = alpha_bar(grid)
    return np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)


def _cosine_alpha_bar(u: np.ndarray, s: float = _COSINE_OFFSET) -> np.ndarray:
    return np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2


def get_beta_schedule(
    name: str | Sequence[float] | np.ndarray, num_timesteps: int = 1000
) -> np.ndarray:
    """Returns the float64 betas [T] of a named schedule, or validates a user-given array.

    - "linear": Ho et al., 1e-4 .. 0.02 at T=1000, both ends scaled by 1000/T for other T.
    - "cosine": Nichol & Dhariwal, alpha_bar(u) = cos^2((u + 0.008) / 1.008 * pi/2), betas <= 0.999.
    - "quadratic": linear in sqrt(beta) between the linear endpoints.
    - "sigmoid": sigmoid(linspace(-6, 6)) rescaled to the linear endpoints.
    """
    if not isinstance(name, str):
        return validate_betas(name)
    num_timesteps = check_int(num_timesteps, "num_timesteps")
    start, end = _linear_endpoints(num_timesteps)
    if name == "linear":
        betas = np.linspace(start, end, num_timesteps, dtype=np.float64)
    elif name == "cosine":
        betas = betas_from_alpha_bar(_cosine_alpha_bar, num_timesteps)
    elif name == "quadratic":
        betas = np.linspace(start**0.5, end**0.5, num_timesteps, dtype=np.float64) ** 2
    elif name == "sigmoid":
        grid = np.linspace(-6.0, 6.0, num_timesteps, dtype=np.float64)
        betas = 1.0 / (1.0 + np.exp(-grid)) * (end - start) + start
    else:
        raise InputError(f"Unknown beta schedule {name!r} for `name`; choose one of {SCHEDULES}.")
    return validate_betas(betas, name=f"betas of the {name!r} schedule at T={num_timesteps}")


def respaced_betas(
    betas: np.ndarray, use_timesteps: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the process that visits only `use_timesteps`, and the map back to original indices.

    The kept steps keep their alpha_bar exactly: beta'_i = 1 - abar[k_i] / abar[k_{i-1}].
    """
    betas = validate_betas(betas)
    keep = np.asarray(sorted(set(int(k) for k in use_timesteps)), dtype=np.int64)
    if keep.size == 0:
        raise InputError("`use_timesteps` is empty; keep at least one step.")
    if keep[0] < 0 or keep[-1] >= betas.size:
        raise InputError(
            f"`use_timesteps` must lie in [0, {betas.size}); got values from {keep[0]} to {keep[-1]}."
        )
    alpha_bar = np.cumprod(1.0 - betas)
    kept = alpha_bar[keep]
    previous = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / previous, keep
