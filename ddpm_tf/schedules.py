"""Beta schedules and timestep respacing.

Every table here is a float64 NumPy array: the products of many (1 - beta) factors lose digits in
float32, and the tables are cast to the compute dtype only when they are gathered for a batch.

Respacing follows the rules of the improved-diffusion reference so that "ddim50" or "10,20,30"
select the same steps as published results do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ddpm_tf.checks import check_int

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
        raise ValueError(f"`{name}` must be a non-empty 1-D array, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` must be finite; got non-finite values at {np.flatnonzero(~np.isfinite(arr))[:5]}."
        )
    bad = np.flatnonzero((arr <= 0.0) | (arr >= 1.0))
    if bad.size:
        raise ValueError(
            f"`{name}` must lie strictly inside (0, 1); index {int(bad[0])} has {arr[bad[0]]!r} "
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
        raise ValueError(f"Unknown beta schedule {name!r} for `name`; choose one of {SCHEDULES}.")
    return validate_betas(betas, name=f"betas of the {name!r} schedule at T={num_timesteps}")


def _ddim_steps(num_timesteps: int, desired: int) -> list[int]:
    """Steps 0, k, 2k, ... with the integer stride k that gives exactly `desired` steps."""
    for stride in range(1, num_timesteps):
        steps = list(range(0, num_timesteps, stride))
        if len(steps) == desired:
            return steps
    if desired == num_timesteps:
        return list(range(num_timesteps))
    raise ValueError(
        f"`section_counts`='ddim{desired}': no integer stride gives exactly {desired} of "
        f"{num_timesteps} steps; pick another count or use a plain int."
    )


def _section_steps(start: int, size: int, count: int) -> list[int]:
    """`count` steps spread evenly over [start, start + size), strides rounded half to even."""
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    return [start + round(i * stride) for i in range(count)]


def parse_section_counts(section_counts: int | str | Sequence[int]) -> int | str:
    """The canonical form of a respacing request, checked for syntax (the one parser of it).

    Accepts an int (that many evenly spaced steps), "ddimN" (a fixed integer stride), "logsnrN"
    (N steps evenly spaced in log-SNR; it needs the schedule: `GaussianDiffusion.respaced`), or
    comma-separated section counts as a string "10,15,20" or a list of ints; a string of one
    count ("50") is that int. Returns an int, "ddimN", or "a,b,c" (two or more sections): a value
    that is hashable, JSON-serializable and reads back the same. Counts are checked against T by
    `space_timesteps`. The result is an int, "ddimN", "logsnrN" or "a,b,c".
    """
    if isinstance(section_counts, bool):
        raise ValueError(_STEPS_SYNTAX.format(section_counts))
    if isinstance(section_counts, int | np.integer):
        counts = [int(section_counts)]
    elif isinstance(section_counts, str):
        text = section_counts.strip().replace(" ", "")
        for prefix in ("ddim", "logsnr"):
            if re.fullmatch(rf"{prefix}[0-9]+", text):
                return f"{prefix}{_positive_count(int(text[len(prefix) :]), section_counts)}"
        if not re.fullmatch(r"[0-9]+(,[0-9]+)*", text):
            raise ValueError(_STEPS_SYNTAX.format(section_counts))
        counts = [int(part) for part in text.split(",")]
    else:
        if len(section_counts) == 0:
            raise ValueError("steps (section counts) is empty; give at least one count.")
        try:
            counts = [int(c) for c in section_counts if not isinstance(c, bool)]
        except (TypeError, ValueError):
            raise ValueError(_STEPS_SYNTAX.format(section_counts)) from None
        if len(counts) != len(section_counts):
            raise ValueError(_STEPS_SYNTAX.format(section_counts))
    counts = [_positive_count(c, section_counts) for c in counts]
    return counts[0] if len(counts) == 1 else ",".join(map(str, counts))


_STEPS_SYNTAX = (
    "steps must be a positive int (e.g. 50), 'ddimN' (e.g. ddim50), 'logsnrN' (e.g. logsnr20) or "
    "comma-separated section counts (e.g. '10,15,20'), got {!r}"
)


def _positive_count(count: int, raw: object) -> int:
    if count < 1:
        raise ValueError(_STEPS_SYNTAX.format(raw))
    return count


def space_timesteps(num_timesteps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """Sorted original timestep indices to keep when sampling with fewer steps.

    `section_counts` is anything `parse_section_counts` accepts: an int (that many evenly spaced
    steps), "ddimN" (a fixed integer stride giving N steps: 0, k, 2k, ...), or section counts
    "10,15,20" / [10, 15, 20]: the T steps are split into that many nearly equal sections and each
    section keeps its count of evenly spaced steps.
    """
    parsed = parse_section_counts(section_counts)
    if isinstance(parsed, str) and parsed.startswith("logsnr"):
        raise ValueError(
            f"steps={section_counts!r} spaces steps by log-SNR, which needs the schedule: use "
            "GaussianDiffusion.respaced(steps)."
        )
    if isinstance(parsed, str) and parsed.startswith("ddim"):
        desired = int(parsed[len("ddim") :])
        if desired > num_timesteps:
            raise ValueError(
                f"steps={section_counts!r} asks for {desired} steps but T={num_timesteps}."
            )
        return _ddim_steps(num_timesteps, desired)
    counts = [parsed] if isinstance(parsed, int) else [int(c) for c in parsed.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    steps: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"steps={section_counts!r}: section {i} asks for {count} steps but has {size} "
                f"(T={num_timesteps} split into {len(counts)} sections); each count must be in [1, {size}]."
            )
        steps += _section_steps(start, size, count)
        start += size
    return sorted(set(steps))


def respaced_betas(
    betas: np.ndarray, use_timesteps: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the process that visits only `use_timesteps`, and the map back to original indices.

    The kept steps keep their alpha_bar exactly: beta'_i = 1 - abar[k_i] / abar[k_{i-1}].
    """
    betas = validate_betas(betas)
    keep = np.asarray(sorted(set(int(k) for k in use_timesteps)), dtype=np.int64)
    if keep.size == 0:
        raise ValueError("`use_timesteps` is empty; keep at least one step.")
    if keep[0] < 0 or keep[-1] >= betas.size:
        raise ValueError(
            f"`use_timesteps` must lie in [0, {betas.size}); got values from {keep[0]} to {keep[-1]}."
        )
    alpha_bar = np.cumprod(1.0 - betas)
    kept = alpha_bar[keep]
    previous = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / previous, keep
