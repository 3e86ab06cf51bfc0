"""Progressive distillation's arithmetic (Salimans & Ho 2022): rounds, grids and the student's target.

A *round* trains a student that samples in n DDIM steps (eta 0) to land where its teacher lands in
2n: the student's grid is `TrailingSteps(n)` (process indices floor(k T / n) - 1, k = 1..n), every
other step of the teacher's `TrailingSteps(2n)`. For a student step from index t = (i + 1) T / n - 1
down to s = i T / n - 1 (s = -1 is the data), the teacher takes two DDIM steps, t -> m -> s with
m = (2i + 1) T / (2n) - 1, and the student's target is the x_0 for which one DDIM step from x_t
lands on the teacher's x_s:

    x_s = alpha_s x_0 + sigma_s (x_t - alpha_t x_0) / sigma_t
    =>  x~_0 = (x_s - (sigma_s / sigma_t) x_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)

with alpha = sqrt(abar), sigma = sqrt(1 - abar) and abar_{-1} = 1 (the denominator is > 0 because
the SNR grows from t to s). The first round's teacher is the trained model at `teacher_steps`
(2n of it); each later round's teacher is the student of the round before, with half its steps.

Every quantity here is a function of process indices of the original T-step schedule, so one
float64 table of abar (with abar_{-1} = 1 in front) serves every round.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from typing import Literal, get_args

import numpy as np
import tensorflow as tf

from ddpm_tf.checks import check_choice
from ddpm_tf.errors import InputError

__all__ = [
    "METHODS",
    "Halving",
    "Method",
    "ddim_move",
    "default_teacher_steps",
    "extended_alphas_cumprod",
    "landing_factor",
    "plan",
    "step_target",
]


Method = Literal["progressive", "consistency"]
METHODS: tuple[str, ...] = get_args(Method)


@dataclasses.dataclass(frozen=True)
class Halving:
    """The rounds of a progressive distillation from `teacher_steps` down to `student_steps`.

    Attributes:
        num_timesteps: T of the diffusion.
        student_steps: the final student's DDIM steps (its sampler's network calls).
        teacher_steps: the steps of the trained model's DDIM sampler that the first round distils;
            student_steps * 2^k for some k >= 1 (k rounds).
        round_steps: training steps of each round, or of each in turn (one per round, the
            first round's first): later rounds, with fewer and longer student steps, are the
            harder ones and may be given more.
    """

    num_timesteps: int
    student_steps: int
    teacher_steps: int
    round_steps: int | tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("student_steps", "teacher_steps"):
            _check_positive(f"distill.{name}", getattr(self, name))
        ratio, rest = divmod(self.teacher_steps, self.student_steps)
        if rest or ratio < 2 or ratio & (ratio - 1):
            raise InputError(
                f"distill.teacher_steps={self.teacher_steps} must be student_steps="
                f"{self.student_steps} times a power of two >= 2 (each round halves the steps), "
                f"e.g. {default_teacher_steps(self.student_steps)}."
            )
        if self.teacher_steps > self.num_timesteps:
            raise InputError(
                f"distill.teacher_steps={self.teacher_steps} exceeds the diffusion's "
                f"T={self.num_timesteps} steps."
            )
        if isinstance(self.round_steps, list | tuple):
            object.__setattr__(self, "round_steps", tuple(self.round_steps))
            for value in self.round_steps:
                _check_positive("each of distill.round_steps", value)
            if len(self.round_steps) != self.rounds:
                raise InputError(
                    f"distill.round_steps lists {len(self.round_steps)} rounds, but "
                    f"{self.teacher_steps} -> {self.student_steps} steps takes {self.rounds} "
                    f"halvings: give {self.rounds} numbers, or one for every round."
                )
        else:
            _check_positive("distill.round_steps", self.round_steps)

    @property
    def rounds(self) -> int:
        """How many halvings: log2(teacher_steps / student_steps)."""
        return (self.teacher_steps // self.student_steps).bit_length() - 1

    @property
    def lengths(self) -> tuple[int, ...]:
        """The training steps of each round."""
        if isinstance(self.round_steps, tuple):
            return self.round_steps
        return (self.round_steps,) * self.rounds

    @property
    def starts(self) -> tuple[int, ...]:
        """The first training step (0-based) of each round."""
        return (0, *self.ends[:-1])

    @property
    def ends(self) -> tuple[int, ...]:
        """The steps taken when each round ends (the last: `total_steps`)."""
        return tuple(int(s) for s in np.cumsum(self.lengths))

    @property
    def total_steps(self) -> int:
        """The training steps of the whole distillation."""
        return self.ends[-1]

    def round_of(self, step: int) -> int:
        """The round that training step `step` (0-based) belongs to (the last after the end)."""
        return bisect_right(self.ends[:-1], int(step))

    def round_tensor(self, step: tf.Tensor) -> tf.Tensor:
        """`round_of` for a scalar step tensor, as int32 (in compiled steps)."""
        ends = tf.constant(self.ends[:-1], tf.int64)
        return tf.reduce_sum(tf.cast(tf.cast(step, tf.int64) >= ends, tf.int32))

    def student_steps_of(self, round_index):
        """The student's steps in round r: teacher_steps / 2^(r + 1) (ints or int32 tensors)."""
        if isinstance(round_index, int):
            return self.teacher_steps >> (round_index + 1)
        return tf.bitwise.right_shift(tf.constant(self.teacher_steps, tf.int32), round_index + 1)

    def indices(self, i, n) -> tuple:
        """(t, m, s): the process indices of student step i of an n-step grid, the teacher's
        midpoint and the step's end (-1: the data), for ints or int32 tensors."""
        total = self.num_timesteps
        t = (i + 1) * total // n - 1
        m = (2 * i + 1) * total // (2 * n) - 1
        s = i * total // n - 1
        return t, m, s


def plan(
    num_timesteps: int,
    student_steps: int,
    teacher_steps: int,
    round_steps: int | list[int] | tuple[int, ...],
    method: Method = "progressive",
) -> Halving:
    """The rounds of a distillation by `method`: progressive distillation's halvings from
    `teacher_steps` down to `student_steps`; or consistency distillation's one round of
    `round_steps` on the grid of teacher_steps / 2 steps, each a pair of the teacher's DDIM steps
    (t -> m -> s of `Halving.indices`), its student sampling in any number of steps."""
    if check_choice(method, METHODS, "distill.method") == "progressive":
        return Halving(num_timesteps, student_steps, teacher_steps, round_steps)
    _check_positive("distill.student_steps", student_steps)
    _check_positive("distill.teacher_steps", teacher_steps)
    if teacher_steps % 2:
        raise InputError(
            f"distill.teacher_steps={teacher_steps} must be even for consistency distillation "
            f"(its grid pairs the teacher's steps), e.g. {teacher_steps + 1}."
        )
    if isinstance(round_steps, list | tuple) and len(round_steps) != 1:
        raise InputError(
            f"consistency distillation trains in one round: give distill.round_steps one "
            f"number, not {list(round_steps)}."
        )
    return Halving(num_timesteps, teacher_steps // 2, teacher_steps, round_steps)


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}.")


def extended_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """[1, abar_0, ..., abar_{T-1}] in float64: entry t + 1 is abar_t, entry 0 the data's 1."""
    return np.concatenate([[1.0], np.asarray(alphas_cumprod, np.float64)])


def _gather(table: np.ndarray, t: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """table[t + 1] for indices t [B] (-1 allowed) as [B, 1, 1, 1] in the dtype of `like`."""
    values = tf.gather(tf.constant(table, like.dtype), tf.convert_to_tensor(t, tf.int32) + 1)
    return tf.reshape(values, [-1, *([1] * (like.shape.rank - 1))])


def ddim_move(abar: np.ndarray, x_t: tf.Tensor, pred_xstart: tf.Tensor, t, s) -> tf.Tensor:
    """One deterministic DDIM step from index t to index s < t (-1: the data) with the x_0
    prediction at x_t: alpha_s x_0 + sigma_s eps, eps = (x_t - alpha_t x_0) / sigma_t.
    `abar` is `extended_alphas_cumprod`."""
    ab_t, ab_s = _gather(abar, t, x_t), _gather(abar, s, x_t)
    eps = (x_t - tf.sqrt(ab_t) * pred_xstart) / tf.sqrt(1.0 - ab_t)
    return tf.sqrt(ab_s) * pred_xstart + tf.sqrt(1.0 - ab_s) * eps


def landing_factor(abar: np.ndarray, t, s, like: tf.Tensor) -> tf.Tensor:
    """c = alpha_s - (sigma_s / sigma_t) alpha_t, shaped to broadcast against `like`: how far an
    x_0 change moves the landing point of `ddim_move` from t to s (x_s = c x_0 + (sigma_s /
    sigma_t) x_t)."""
    ab_t, ab_s = _gather(abar, t, like), _gather(abar, s, like)
    return tf.sqrt(ab_s) - tf.sqrt((1.0 - ab_s) / (1.0 - ab_t)) * tf.sqrt(ab_t)


def step_target(abar: np.ndarray, x_t: tf.Tensor, x_s: tf.Tensor, t, s) -> tf.Tensor:
    """The x_0 for which `ddim_move` from x_t at t lands on x_s at s (the module docstring)."""
    ab_t, ab_s = _gather(abar, t, x_t), _gather(abar, s, x_t)
    ratio = tf.sqrt((1.0 - ab_s) / (1.0 - ab_t))
    return (x_s - ratio * x_t) / landing_factor(abar, t, s, x_t)


def default_teacher_steps(student_steps: int, at_least: int = 64) -> int:
    """student_steps * 2^k with the smallest k >= 1 that reaches `at_least` steps."""
    steps = 2 * student_steps
    while steps < at_least:
        steps *= 2
    return steps
