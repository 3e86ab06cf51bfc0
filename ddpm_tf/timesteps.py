"""Timestep samplers for training: which t each example of a batch is trained on, and its weight.

(A *timestep sampler* draws training timesteps; a *sampler*, `ddpm_tf.sampling.Sampler`, draws
images.) A timestep sampler draws t with probabilities p_t and returns weights w_t = 1 / (T p_t), so that
E_{t~p}[w_t L_t] = (1/T) sum_t L_t whatever p is: the loss estimate stays unbiased and only its
variance changes. `LossSecondMomentResampler` is Improved DDPM's importance sampler for the VLB,
p_t proportional to sqrt(E[L_t^2]), estimated from the last few losses seen at each t.

The samplers keep their state in `tf.Variable`s, so they run inside a compiled `train_step` and are
saved with a `tf.train.Checkpoint` (exact resume needs the loss history too). Under a distribution
strategy, give `update_with_losses` the losses of all replicas (all-gathered): every replica then
writes the same values.
"""

from __future__ import annotations

from typing import Literal, get_args

import tensorflow as tf

from ddpm_tf.checks import check_choice, check_int
from ddpm_tf.errors import InputError
from ddpm_tf.rng import as_seed

# Every replica records the same all-gathered losses, so any replica's write is the right one.
_REPLICATED = tf.VariableAggregation.ONLY_FIRST_REPLICA


TimestepSamplerName = Literal["uniform", "loss-second-moment"]
TIMESTEP_SAMPLERS: tuple[str, ...] = get_args(TimestepSamplerName)


class TimestepSampler(tf.Module):
    """Base class: `probabilities()` is a float32 [T] vector summing to one (uniform here)."""

    learns_from_losses = False  # whether `update_with_losses` changes the probabilities

    def __init__(self, num_timesteps: int, name: str | None = None):
        super().__init__(name=name)
        self.num_timesteps = check_int(num_timesteps, "num_timesteps")

    def probabilities(self) -> tf.Tensor:
        return tf.fill([self.num_timesteps], 1.0 / self.num_timesteps)

    def sample(self, batch_size: int | tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
        """Draws t int32 [B] and the importance weights float32 [B] (1 / (T p_t))."""
        probs = self.probabilities()
        logits = tf.math.log(probs)[tf.newaxis]
        t = tf.random.stateless_categorical(logits, batch_size, seed=as_seed(seed), dtype=tf.int32)[
            0
        ]
        weights = 1.0 / (self.num_timesteps * tf.gather(probs, t))
        return t, weights

    def update_with_losses(self, t: tf.Tensor, losses: tf.Tensor) -> None:
        """Records per-example losses (of all replicas) at timesteps t; a no-op for fixed samplers."""
        del t, losses


class UniformSampler(TimestepSampler):
    """p_t = 1/T: the sampler of Ho et al.; every weight is 1."""


class LossSecondMomentResampler(TimestepSampler):
    """Importance sampling with p_t proportional to the RMS of the recent losses at t.

    Uniform until every t has `history_per_term` losses recorded; afterwards mixed with a
    `uniform_prob` share of the uniform distribution so no timestep is starved.
    """

    learns_from_losses = True

    def __init__(
        self,
        num_timesteps: int,
        history_per_term: int = 10,
        uniform_prob: float = 0.001,
        name: str | None = None,
    ):
        super().__init__(num_timesteps, name=name)
        if history_per_term < 1:
            raise InputError(f"`history_per_term` must be >= 1, got {history_per_term}.")
        if not 0.0 <= uniform_prob <= 1.0:
            raise InputError(f"`uniform_prob` must be in [0, 1], got {uniform_prob}.")
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = tf.Variable(
            tf.zeros([self.num_timesteps, self.history_per_term], tf.float64),
            trainable=False,
            name="loss_history",
            aggregation=_REPLICATED,
        )
        self.loss_counts = tf.Variable(
            tf.zeros([self.num_timesteps], tf.int32),
            trainable=False,
            name="loss_counts",
            aggregation=_REPLICATED,
        )

    def warmed_up(self) -> tf.Tensor:
        return tf.reduce_all(self.loss_counts >= self.history_per_term)

    def probabilities(self) -> tf.Tensor:
        rms = tf.sqrt(tf.reduce_mean(tf.square(self.loss_history), axis=-1))
        weighted = rms / tf.reduce_sum(rms)
        mixed = weighted * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        uniform = tf.cast(super().probabilities(), tf.float64)
        return tf.cast(tf.where(self.warmed_up(), mixed, uniform), tf.float32)

    def update_with_losses(self, t: tf.Tensor, losses: tf.Tensor) -> None:
        """Appends each loss to its timestep's history (oldest dropped once full), in batch order."""
        t = tf.reshape(tf.cast(t, tf.int32), [-1])
        losses = tf.reshape(tf.cast(losses, tf.float64), [-1])

        def record(i, history, counts):
            ti = t[i]
            row = history[ti]
            full = counts[ti] >= self.history_per_term
            shifted = tf.concat([row[1:], losses[i : i + 1]], axis=0)
            slot = tf.one_hot(counts[ti], self.history_per_term, dtype=tf.float64)
            filled = row * (1.0 - slot) + slot * losses[i]
            new_row = tf.where(full, shifted, filled)
            history = tf.tensor_scatter_nd_update(history, [[ti]], new_row[tf.newaxis])
            counts = tf.tensor_scatter_nd_add(counts, [[ti]], [tf.where(full, 0, 1)])
            return i + 1, history, counts

        _, history, counts = tf.while_loop(
            lambda i, *_: i < tf.size(t),
            record,
            (tf.constant(0), self.loss_history.read_value(), self.loss_counts.read_value()),
        )
        self.loss_history.assign(history)
        self.loss_counts.assign(counts)


def create_timestep_sampler(name: TimestepSamplerName, num_timesteps: int) -> TimestepSampler:
    """A timestep sampler by name: "uniform" or "loss-second-moment" (as in improved-diffusion)."""
    check_choice(name, TIMESTEP_SAMPLERS, "timestep_sampler")
    if name == "uniform":
        return UniformSampler(num_timesteps)
    return LossSecondMomentResampler(num_timesteps)
