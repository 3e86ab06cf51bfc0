"""Which timesteps a sampler visits: typed steps values, their one text syntax, and the rules.

A *steps* value says how a T-step process is respaced for sampling. It is one of six types,
parsed once where a user writes it (a flag, a TOML value, a keyword argument) by `parse_steps`,
and typed everywhere inside:

| type | text | the kept indices |
| --- | --- | --- |
| `AllSteps()` | `all` | all T |
| `UniformSteps(n)` | `uniform50` | n, evenly spaced over [0, T) (strides rounded half to even) |
| `StrideSteps(n)` | `stride50` (or `ddim50`) | 0, k, 2k, ... with the integer stride k that gives n |
| `LogSNRSteps(n)` | `logsnr20` | n, evenly spaced in half log-SNR (needs the schedule) |
| `TrailingSteps(n)` | `trailing4` | floor(k T / n) - 1 for k = 1..n: T-1 kept, 0 not |
| `SectionSteps(c)` | `10,15,20` | T split into len(c) near-equal sections, c[i] evenly in each |

A bare count (`50`, or the int 50) means n steps with the sampling method's *default spacing*
(uniform for ancestral sampling and DDIM, log-SNR for DPM-Solver++): `parse_steps` takes that
spacing as an argument, and `SamplingSpec` passes its method's. The uniform, stride and section
rules are improved-diffusion's (`space_timesteps` keeps its syntax: an int, "ddimN", "a,b,c"), so
published step counts select the same steps here. The trailing rule (diffusers' "trailing" spacing,
Lin et al. 2024) starts at the top step T-1 whatever n is, and its grids are nested (the n-step
grid is every other step of the 2n-step one): the grids of a distilled sampler (`ddpm_tf.distill`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError

__all__ = [
    "AllSteps",
    "LogSNRSteps",
    "SectionSteps",
    "Steps",
    "StrideSteps",
    "TrailingSteps",
    "UniformSteps",
    "half_log_snr",
    "parse_steps",
    "space_timesteps",
]

_SYNTAX = (
    "steps must be 'all', a count N (the method's default spacing, e.g. 50), 'uniformN', "
    "'strideN' (or 'ddimN'), 'logsnrN', 'trailingN' or comma-separated section counts (e.g. '10,15,20'), "
    "got {!r}"
)


def half_log_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar)), float64 (+inf where abar = 1)."""
    ab = np.asarray(alphas_cumprod, np.float64)
    with np.errstate(divide="ignore"):
        return 0.5 * (np.log(ab) - np.log1p(-ab))


def _too_many(steps: Steps, count: int, total: int) -> ValueError:
    return ValueError(f"steps={steps.text!r} asks for {count} steps but T={total}.")


@dataclasses.dataclass(frozen=True)
class AllSteps:
    """Every step of the process."""

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        return list(range(num_timesteps))

    @property
    def text(self) -> str:
        return "all"


@dataclasses.dataclass(frozen=True)
class _Counted:
    """A spacing of `count` steps (a positive int)."""

    count: int
    prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int | np.integer):
            raise InputError(_SYNTAX.format(self.count))
        if self.count < 1:
            raise InputError(_SYNTAX.format(self.count))
        object.__setattr__(self, "count", int(self.count))

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.count}"


@dataclasses.dataclass(frozen=True)
class UniformSteps(_Counted):
    """`count` steps spread evenly over [0, T), improved-diffusion's rounding (half to even)."""

    prefix: ClassVar[str] = "uniform"

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        return _sections(num_timesteps, (self.count,), self.text)


@dataclasses.dataclass(frozen=True)
class StrideSteps(_Counted):
    """Steps 0, k, 2k, ... with the one integer stride k that gives exactly `count` of them
    (improved-diffusion's "ddimN": it never includes T-1 unless the stride is 1)."""

    prefix: ClassVar[str] = "stride"

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        if self.count > num_timesteps:
            raise _too_many(self, self.count, num_timesteps)
        for stride in range(1, num_timesteps + 1):
            kept = list(range(0, num_timesteps, stride))
            if len(kept) == self.count:
                return kept
        raise InputError(
            f"steps={self.text!r}: no integer stride gives exactly {self.count} of "
            f"{num_timesteps} steps; pick another count or use uniform{self.count}."
        )


@dataclasses.dataclass(frozen=True)
class LogSNRSteps(_Counted):
    """`count` steps whose half log-SNR is as evenly spaced as the grid allows (both ends kept).

    Each target, evenly spaced in lambda from lambda_{T-1} to lambda_0, picks the index nearest in
    lambda; where the grid is coarser than the targets, duplicates take the nearest unused index, so
    exactly `count` distinct steps are returned.
    """

    prefix: ClassVar[str] = "logsnr"

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        if alphas_cumprod is None:
            raise InputError(
                f"steps={self.text!r} spaces steps by log-SNR, which needs the schedule: use "
                "GaussianDiffusion.with_steps(steps) or steps.indices(T, alphas_cumprod)."
            )
        lam = half_log_snr(alphas_cumprod)
        if self.count > lam.size:
            raise _too_many(self, self.count, lam.size)
        chosen: list[int] = []
        for target in np.linspace(lam[-1], lam[0], self.count):
            order = np.argsort(np.abs(lam - target), kind="stable")
            chosen.append(int(next(i for i in order if i not in chosen)))
        return sorted(chosen)


@dataclasses.dataclass(frozen=True)
class SectionSteps:
    """T split into len(counts) near-equal sections, each keeping its count of evenly spaced
    steps (`_sections`); `UniformSteps(n)` is the one-section case."""

    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        counts = tuple(self.counts)
        if len(counts) < 2:
            raise InputError(f"SectionSteps needs two or more counts, got {counts}.")
        for count in counts:
            _Counted(count)  # each a positive int
        object.__setattr__(self, "counts", tuple(int(c) for c in counts))

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        return _sections(num_timesteps, self.counts, self.text)

    @property
    def text(self) -> str:
        return ",".join(map(str, self.counts))


@dataclasses.dataclass(frozen=True)
class TrailingSteps(_Counted):
    """Steps floor(k T / count) - 1 for k = 1..count: the top step T-1 always, step 0 only when
    count = T; the count-step grid is every other step of the 2 count-step one, as progressive
    distillation halves a sampler's steps (`ddpm_tf.distill`)."""

    prefix: ClassVar[str] = "trailing"

    def indices(self, num_timesteps: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
        if self.count > num_timesteps:
            raise _too_many(self, self.count, num_timesteps)
        return [(k * num_timesteps) // self.count - 1 for k in range(1, self.count + 1)]


Steps = AllSteps | UniformSteps | StrideSteps | LogSNRSteps | TrailingSteps | SectionSteps
"""A steps value: one of the six types above."""

STEPS_TYPES: tuple[type, ...] = (
    AllSteps,
    UniformSteps,
    StrideSteps,
    LogSNRSteps,
    TrailingSteps,
    SectionSteps,
)
_PREFIXES: dict[str, Callable[[int], Steps]] = {
    "uniform": UniformSteps,
    "stride": StrideSteps,
    "ddim": StrideSteps,  # improved-diffusion's name of the stride rule
    "logsnr": LogSNRSteps,
    "trailing": TrailingSteps,
}


def _sections(num_timesteps: int, counts: tuple[int, ...], text: str) -> list[int]:
    """improved-diffusion's rule: T split into len(counts) near-equal sections (the first
    T % len(counts) one longer), each keeping its count of steps spread evenly over it (strides
    rounded half to even; a count of 1 keeps the section's first step)."""
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise InputError(
                f"steps={text!r}: section {i} asks for {count} steps but has {size} "
                f"(T={num_timesteps} split into {len(counts)} sections); each count must be in "
                f"[1, {size}]."
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return sorted(set(kept))


def parse_steps(value: Any, default_spacing: Callable[[int], Steps] = UniformSteps) -> Steps:
    """The typed steps value of `value`: a `Steps` (returned as it is), None or "all" (all
    steps), a count (`default_spacing(count)`), a text of the table above, or a list of section
    counts. The one parser of the steps syntax."""
    if isinstance(value, STEPS_TYPES):
        return value
    if value is None:
        return AllSteps()
    if isinstance(value, bool):
        raise InputError(_SYNTAX.format(value))
    if isinstance(value, int | np.integer):
        return default_spacing(_Counted(value).count)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text == "all":
            return AllSteps()
        match = re.fullmatch(r"([a-z]*)([0-9]+)", text)
        if match and match[1] in ("", *_PREFIXES):
            count = _checked_count(int(match[2]), value)
            return _PREFIXES[match[1]](count) if match[1] else default_spacing(count)
        if not re.fullmatch(r"[0-9]+(,[0-9]+)+", text):
            raise InputError(_SYNTAX.format(value))
        return SectionSteps(tuple(_checked_count(int(c), value) for c in text.split(",")))
    if isinstance(value, Sequence):
        if any(isinstance(c, bool) or not isinstance(c, int | np.integer) for c in value):
            raise InputError(_SYNTAX.format(value))
        counts = [_checked_count(int(c), value) for c in value]
        if not counts:
            raise InputError("steps (section counts) is empty; give at least one count.")
        return default_spacing(counts[0]) if len(counts) == 1 else SectionSteps(tuple(counts))
    raise InputError(_SYNTAX.format(value))


def _checked_count(count: int, raw: object) -> int:
    if count < 1:
        raise InputError(_SYNTAX.format(raw))
    return count


def space_timesteps(num_timesteps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """Sorted original timestep indices to keep, in improved-diffusion's syntax and rules.

    `section_counts` is an int (that many evenly spaced steps), "ddimN" (a fixed integer stride
    giving N steps: 0, k, 2k, ...), or section counts "10,15,20" / [10, 15, 20]; any text of
    `parse_steps` is taken too (a bare count is uniform). "logsnrN" needs the schedule: use
    `GaussianDiffusion.with_steps`.
    """
    num_timesteps = check_int(num_timesteps, "num_timesteps")
    return parse_steps(section_counts).indices(num_timesteps)
