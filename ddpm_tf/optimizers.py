"""Optimizers of the package: Ho et al.'s learning-rate schedule and a one-kernel Adam.

`WarmupSchedule` is the learning rate of `ddpm-train` (linear warm-up, then constant or a decay to
0); `FusedAdam` is Keras' Adam with each update in one TensorFlow kernel; `default_optimizer` puts
the two together as Ho et al. trained. They live apart from `ddpm_tf.model` because they are not
the model: any Keras model can use them, and `DiffusionModel` takes any optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf import compat
from ddpm_tf.checks import check_choice
from ddpm_tf.errors import InputError

__all__ = ["LR_DECAYS", "FusedAdam", "LrDecay", "WarmupSchedule", "default_optimizer"]

LrDecay = Literal["constant", "cosine", "linear"]
LR_DECAYS: tuple[str, ...] = get_args(LrDecay)


@keras.saving.register_keras_serializable(package="ddpm_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then a constant or decaying learning rate (per optimizer step).

    lr(step) = learning_rate * min(1, (step + 1) / warmup_steps) * d(f), where
    f = (step - warmup_steps) / (decay_steps - warmup_steps) clipped to [0, 1] is how far the decay
    has gone and d is 1 ("constant"), (1 + cos(pi f)) / 2 ("cosine") or 1 - f ("linear"): a decay
    reaches 0 at `decay_steps` (in `ddpm-train`, the run's `train.steps`).

    Args:
        learning_rate: the peak learning rate, > 0.
        warmup_steps: steps of the linear warm-up (0: none).
        decay: the shape after the warm-up.
        decay_steps: the step at which a decay reaches 0; must exceed `warmup_steps` unless
            `decay` is "constant" (where it is ignored).
        periods: the lengths of successive periods after each of which the schedule starts
            again, warm-up and all, the last period repeating (each round of a progressive
            distillation trains afresh): step is counted from its period's start and a decay
            reaches 0 at its period's end (`decay_steps` is then not used); (): one schedule.
    """

    def __init__(
        self,
        learning_rate: float = 2e-4,
        warmup_steps: int = 5000,
        decay: LrDecay = "constant",
        decay_steps: int = 0,
        periods: Sequence[int] = (),
    ):
        if learning_rate <= 0:
            raise InputError(f"`learning_rate` must be > 0, got {learning_rate}.")
        if warmup_steps < 0:
            raise InputError(f"`warmup_steps` must be >= 0, got {warmup_steps}.")
        decay = check_choice(decay, LR_DECAYS, "decay")
        self.periods = tuple(int(p) for p in periods)
        if any(p < 1 for p in self.periods):
            raise InputError(f"`periods` must be positive step counts, got {list(periods)}.")
        name = "each period" if self.periods else "`decay_steps`"
        for span in self.periods or (decay_steps,):
            if decay != "constant" and span <= warmup_steps:
                raise InputError(
                    f"a {decay} decay needs {name} ({span}) > `warmup_steps` ({warmup_steps}): "
                    "the decay runs from the end of the warm-up to its end."
                )
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.decay_steps = int(decay_steps) if decay != "constant" and not self.periods else 0

    def _in_period(self, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(step counted from its period's start, that period's length), int64 scalars."""
        starts = np.cumsum((0, *self.periods[:-1]))
        index = tf.reduce_sum(tf.cast(step >= starts[1:], tf.int32))
        last_start, last = int(starts[-1]), self.periods[-1]
        local = tf.where(
            step >= last_start, (step - last_start) % last, step - tf.gather(starts, index)
        )
        return local, tf.gather(tf.constant(self.periods, tf.int64), index)

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        end = tf.constant(self.decay_steps, tf.int64)
        if self.periods:
            step, end = self._in_period(step)
        step, end = tf.cast(step, tf.float32), tf.cast(end, tf.float32)
        lr = tf.constant(self.learning_rate, tf.float32)
        if self.warmup_steps:
            lr *= tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        if self.decay == "constant":
            return lr
        # 1 - f, computed from the steps left so that the last steps' small rates keep precision
        left = tf.clip_by_value((end - step) / (end - float(self.warmup_steps)), 0.0, 1.0)
        if self.decay == "cosine":
            return lr * tf.square(tf.sin(0.5 * math.pi * left))  # = (1 + cos(pi f)) / 2
        return lr * left

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "decay_steps": self.decay_steps,
            "periods": list(self.periods),
        }

    @classmethod
    def from_config(cls, config: dict) -> WarmupSchedule:
        config = dict(config)
        every = config.pop("restart_every", 0)  # the configs of equal periods, saved before
        if every:
            config["periods"] = (every,)
        return cls(**config)


@keras.saving.register_keras_serializable(package="ddpm_tf")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam with each weight's update in one TensorFlow kernel (``ResourceApplyAdam``).

    Keras' Adam updates a weight with about ten element-wise ops, each a pass over the moments or
    the weight (a tenth of a 35.7M-parameter CIFAR-10 step on a CPU); TensorFlow's ApplyAdam
    kernel does the same arithmetic, ``m += (1 - b1)(g - m)``, ``v += (1 - b2)(g^2 - v)``,
    ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``, in one pass (CPU, GPU and XLA
    kernels). Same arguments, config and slot variables as Adam, so checkpoints of either restore
    into the other. ``amsgrad`` and sparse gradients take Keras' own update.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        momentum, velocity = compat.adam_slots(self, variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=momentum.handle,
            v=velocity.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
        return None


def default_optimizer(
    learning_rate: float = 2e-4, warmup_steps: int = 5000
) -> keras.optimizers.Optimizer:
    """Ho et al.'s optimizer: Adam at 2e-4 after a linear warm-up of 5000 steps (FusedAdam)."""
    return FusedAdam(WarmupSchedule(learning_rate, warmup_steps))
