"""`SamplingMethod`: what a sampling method is, in one class per method.

A method is a rule that takes the sampler from x_t to x_{t-1}, one step of a (respaced) process.
Each method is one module of this package (`ancestral.py`, `ddim.py`, `dpm_solver.py`) holding a
subclass with:

- `name`, the word a user writes (`SamplingSpec.method`, `--method`, `--compare`);
- `takes`, the `SamplingSpec` settings that apply to it beyond the shared ones (steps, clipping,
  weights, noise source, XLA): DDIM takes `eta`, DPM-Solver++ `solver_order`; every other method
  leaves them at their defaults;
- `default_spacing`, how a bare step count is spaced (`ddpm_tf.spacing`);
- `step`, one update, and the flags the loop needs (`needs_noise`, `multistep`);
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

from ddpm_tf.spacing import Steps, UniformSteps

if TYPE_CHECKING:
    from ddpm_tf.diffusion import GaussianDiffusion
    from ddpm_tf.sampling.spec import SamplingSpec

__all__ = ["Predict", "SamplingMethod", "not_final"]

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
    multistep: ClassVar[bool] = False
    """True if `step` uses the previous step's x_0 prediction (`x0_last`)."""

    def __init__(self, process: GaussianDiffusion, spec: SamplingSpec):
        self.process = process
        self.spec = spec

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
        x0_last: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(x_{t-1}, the x_0 prediction at x_t) for x_t [B, H, W, C] at process indices t [B].

        `noise` is a standard normal like x_t (None if not `needs_noise`); `x0_last` the x_0
        prediction of the previous step (zeros on the first; only for `multistep` methods).
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
