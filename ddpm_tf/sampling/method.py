"""`SamplingMethod`: what a sampling method is, in one class per method.

A method is a rule that takes the sampler from x_t to x_{t-1}, one step of a (respaced) process.
Each method is one module of this package (`ancestral.py`, `ddim.py`, `dpm_solver.py`) holding a
subclass with:

- `name`, the word a user writes (`SamplingSpec.method`, `--method`, `--compare`);
- `takes`, the `SamplingSpec` settings that apply to it beyond the shared ones (steps, clipping,
  weights, noise source, XLA): DDIM takes `eta`, DPM-Solver++ `solver_order`; every other method
  leaves them at their defaults;
- `default_spacing`, how a bare step count is spaced (`ddpm_tf.spacing`);
- `step`, one update, and what the loop needs to know (`needs_noise`, `memory`);
- `describe`, the words that `SamplingSpec.describe` adds for its settings.

`ddpm_tf.sampling.registry` lists them; the spec, the loop, the programs and the exports read that
table, and `tests/test_sampling_methods.py` runs every registered method against the exact answers
of Gaussian data. A method is built for one process (the diffusion respaced to the spec's steps)
and one spec, so it can precompute its coefficient tables in float64 once.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import tensorflow as tf

from ddpm_tf.errors import InputError
from ddpm_tf.spacing import LogSNRSteps, Steps, UniformSteps

if TYPE_CHECKING:
    from ddpm_tf.diffusion import GaussianDiffusion
    from ddpm_tf.sampling.spec import SamplingSpec

__all__ = ["MultistepSolver", "Predict", "SamplingMethod", "not_final"]

Predict = Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]
"""predict(x_t, t) -> dict(mean, log_variance, pred_xstart): the model's p(x_{t-1} | x_t) at
process indices t [B], with the spec's bounds on x_0 applied (built by the loop)."""


def not_final(t: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """1 where t > 0 and 0 at t = 0, shaped [B, 1, 1, 1] to broadcast against `like`: the last step
    to the data adds no noise."""
    mask = tf.cast(tf.not_equal(t, 0), like.dtype)
    return tf.reshape(mask, tf.concat([tf.shape(t), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


class SamplingMethod(abc.ABC):
    """One sampling rule over a process; subclasses fill in the class attributes and `step`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    takes: ClassVar[tuple[str, ...]] = ()
    default_spacing: ClassVar[Callable[[int], Steps]] = UniformSteps

    def __init__(self, process: GaussianDiffusion, spec: SamplingSpec, start: int | None = None):
        self.process = process
        self.spec = spec
        self.start = process.num_timesteps - 1 if start is None else int(start)
        """The process index of the first step: a multistep method has no history there."""

    @property
    def memory(self) -> int:
        """How many tensors like x_t `step` hands to the next step (a multistep method's history:
        earlier x_0 predictions, an earlier sample); the loop starts them at zeros."""
        return 0

    @property
    def needs_noise(self) -> bool:
        """Whether `step` takes fresh Gaussian noise (False: the loop draws none)."""
        return True

    @abc.abstractmethod
    def step(
        self,
        predict: Predict,
        x_t: tf.Tensor,
        t: tf.Tensor,
        noise: tf.Tensor | None,
        memory: tuple[tf.Tensor, ...] = (),
    ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, ...]]:
        """(x_{t-1}, the x_0 prediction at x_t, the memory for the next step) for x_t
        [B, H, W, C] at process indices t [B].

        `noise` is a standard normal like x_t (None if not `needs_noise`); `memory` the `memory`
        tensors the previous step returned (zeros at `start`; () for a one-step method).
        """

    @classmethod
    def describe(cls, spec: SamplingSpec) -> list[str]:
        """Words for the settings in `takes`, e.g. ["eta 0"]."""
        return []

    @classmethod
    def check(cls, spec: SamplingSpec) -> None:
        """Raises ValueError if a setting of `spec` is out of this method's range (beyond the
        types and ranges `SamplingSpec` checks for every method); the default takes every value."""
        return None

    def __repr__(self) -> str:
        info: dict[str, Any] = {name: getattr(self.spec, name) for name in self.takes}
        return f"{type(self).__name__}(T={self.process.num_timesteps}, {info})"


class MultistepSolver(SamplingMethod):
    """A deterministic multistep solver of the probability-flow ODE in log-SNR (DPM-Solver++,
    UniPC): its update is float64 coefficient tables per step, made once from the process's
    alphas_cumprod, its order and the index where the loop starts (no history there)."""

    takes = ("solver_order",)
    default_spacing = LogSNRSteps
    label: ClassVar[str]  # the method's name in messages ("DPM-Solver++")
    orders: ClassVar[tuple[int, ...]]  # the solver_order values it takes

    def __init__(self, process: GaussianDiffusion, spec: SamplingSpec, start: int | None = None):
        super().__init__(process, spec, start)
        self.tables = self.make_tables(process.alphas_cumprod, spec.solver_order, self.start)

    @staticmethod
    @abc.abstractmethod
    def make_tables(alphas_cumprod: Any, order: int, start: int) -> dict[str, Any]:
        """The method's coefficient tables (float64 numpy arrays indexed by process index)."""

    @property
    def needs_noise(self) -> bool:
        return False

    @classmethod
    def describe(cls, spec: SamplingSpec) -> list[str]:
        return [f"order {spec.solver_order}"]

    @classmethod
    def check(cls, spec: SamplingSpec) -> None:
        if spec.solver_order not in cls.orders:
            allowed = ", ".join(map(str, cls.orders[:-1])) + f" or {cls.orders[-1]}"
            raise InputError(f"solver_order={spec.solver_order}: {cls.label} takes {allowed}.")
