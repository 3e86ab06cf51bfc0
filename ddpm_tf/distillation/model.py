"""`DistillationModel`: a `DiffusionModel` whose training step is progressive distillation (or,
with `method="consistency"`, consistency distillation in one round).

The student is the model's `network` (and its EMA copy, which samples); the teacher a frozen copy
of the same architecture, `teacher_network`. Both start as the trained model's EMA weights. In
round r the student learns to take in one DDIM step what the teacher takes in two
(`ddpm_tf.distillation.halving`); when a round ends (`start_round`, called by the training
program before the first step of each round), the student's EMA weights become the teacher and
the student's starting point, and the student's grid halves. The learning-rate schedule and the
EMA warm-up restart with each round.

Its `default_spec` is the current round's student sampler (DDIM, eta 0, `TrailingSteps(n)`), so
the sample grids and FID of a run follow the rounds, and the finished model samples in
`student_steps` calls wherever a run directory is read (ddpm-sample, ddpm-eval, ddpm-export).

Train it with `model.fit(..., callbacks=[Rounds()])`: the callback starts the rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import keras
import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_choice
from ddpm_tf.diffusion import GaussianDiffusion
from ddpm_tf.distillation.halving import (
    Method,
    ddim_move,
    extended_alphas_cumprod,
    landing_factor,
    plan,
    step_target,
)
from ddpm_tf.errors import InputError
from ddpm_tf.losses import mean_over_dims
from ddpm_tf.model import DiffusionModel
from ddpm_tf.sampling import SamplingSpec, call_network
from ddpm_tf.spacing import TrailingSteps

__all__ = [
    "LOSS_WEIGHTINGS",
    "STUDENTS_DIR",
    "DistillationModel",
    "LossWeighting",
    "Rounds",
    "kept_students",
    "student_file",
    "student_spec",
]

STUDENTS_DIR = "students"
"""Where a distillation run keeps each round's student: students/steps<N>.keras."""

LossWeighting = Literal["truncated_snr", "landing", "uniform"]
LOSS_WEIGHTINGS: tuple[str, ...] = get_args(LossWeighting)


@keras.saving.register_keras_serializable(package="ddpm_tf")
class DistillationModel(DiffusionModel):
    """Progressive distillation of a trained denoiser (see the module docstring).

    Args:
        network: the student, initialised by the caller from the teacher (`initialize_from`).
        diffusion: the teacher's `GaussianDiffusion` (its parameterization is the student's).
        student_steps: the final student's steps; teacher_steps: the steps of the trained model's
            DDIM sampler that the first round distils (student_steps * 2^k); round_steps:
            training steps per round, or a list of each round's (`Halving`).
        clip_denoised, dynamic_threshold: the bounds of the teacher's x_0 predictions and of the
            student's sampler, as in `SamplingSpec`.
        teacher: where the teacher came from (a run directory), for the record.
        loss_weighting: the weight of a step's squared x_0 error: "landing" (the default), the
            squared factor c_t,s = alpha_s - sigma_s alpha_t / sigma_t by which an x_0 error
            moves the step's landing point x_s, so the loss is the squared error of x_s; or
            "truncated_snr", max(SNR_t, 1) (Salimans & Ho). On the digits' epsilon model, one
            round 8 -> 4 steps gave FID 4.31 with "landing" and 5.33 with "truncated_snr"
            (docs/sampling.md); or "uniform", 1.
        method: "progressive" (the default: the rounds of halvings above) or "consistency"
            (consistency distillation, Song et al. 2023): one round of `round_steps` on the grid
            of `teacher_steps // 2` steps, in which the student's x_0 at x_t learns its own x_0
            (without gradient or dropout) at the point x_s where the teacher's two DDIM steps
            from x_t land, and the data's x_s itself at the grid's last step. Its student
            samples on any grid: by default DDIM (eta 0) on `TrailingSteps(student_steps)`.
        **kwargs: `DiffusionModel`'s (ema_decay, grad_clip_norm, label_dropout, seed, ...); the
            timesteps are the student's grid, drawn uniformly.
    """

    def __init__(
        self,
        network: keras.Model,
        diffusion: GaussianDiffusion | dict | None = None,
        *,
        student_steps: int,
        teacher_steps: int,
        round_steps: int | list[int] | tuple[int, ...],
        clip_denoised: bool = True,
        dynamic_threshold: float = 0.0,
        teacher: str = "",
        loss_weighting: LossWeighting = "landing",
        method: Method = "progressive",
        **kwargs: Any,
    ):
        if kwargs.pop("timestep_sampler", "uniform") != "uniform":
            raise InputError(
                "distillation draws the student's steps uniformly: train.timestep_sampler must "
                "be 'uniform'."
            )
        kwargs.pop("sampling", None)  # the rounds say how it samples (`default_spec`)
        super().__init__(network, diffusion, **kwargs)
        self.halving = plan(
            self.diffusion.num_timesteps, student_steps, teacher_steps, round_steps, method
        )
        self.method = method
        self.student_steps = int(student_steps)
        self.clip_denoised = bool(clip_denoised)
        self.dynamic_threshold = float(dynamic_threshold)
        self.teacher = str(teacher)
        self.loss_weighting = check_choice(loss_weighting, LOSS_WEIGHTINGS, "loss_weighting")
        self.spec_of_round(0)  # checks the bounds as a SamplingSpec does
        self._abar = extended_alphas_cumprod(self.diffusion.alphas_cumprod)
        self.teacher_network = keras.models.clone_model(network)
        self.teacher_network.set_weights(network.get_weights())
        self.teacher_network.trainable = False

    # ------------------------------------------------------------------------------------ rounds
    def steps_of_round(self, round_index: int) -> int:
        """The network calls of the student's sampler in round r."""
        if self.method == "consistency":
            return self.student_steps
        return self.halving.student_steps_of(round_index)

    def spec_of_round(self, round_index: int) -> SamplingSpec:
        """The student's sampler in round r (`student_spec`)."""
        steps = self.steps_of_round(round_index)
        return student_spec(steps, self.clip_denoised, self.dynamic_threshold)

    @property
    def round(self) -> int:
        """The round of the weights now: that of the last step taken (the first before any)."""
        return self.halving.round_of(max(self.step - 1, 0))

    @property
    def default_spec(self) -> SamplingSpec:
        return self.spec_of_round(self.round)

    @property
    def milestones(self) -> tuple[int, ...]:
        """The end of every round: each round's student is scored and drawn."""
        return self.halving.ends

    def initialize_from(self, teacher: DiffusionModel) -> None:
        """Student, its EMA and the teacher all take `teacher`'s EMA weights (a fresh start)."""
        weights = teacher.ema_network.get_weights()
        for network in (self.network, self.ema_network, self.teacher_network):
            network.set_weights(weights)

    def round_starts(self) -> bool:
        """Whether the next training step is the first of a round after the first."""
        return self.step in self.halving.ends[:-1]

    def start_round(self) -> None:
        """The student's EMA weights become the teacher and the student's starting point."""
        weights = self.ema_network.get_weights()
        self.teacher_network.set_weights(weights)
        self.network.set_weights(weights)

    def checkpoint_variables(self) -> list[tf.Variable]:
        """`DiffusionModel`'s, and the teacher's weights (a round's teacher is a trained student)."""
        listed = super().checkpoint_variables()
        seen = {id(v) for v in listed}
        return listed + [v for v in self.teacher_network.weights if id(v) not in seen]

    def student(self) -> DiffusionModel:
        """The student now as an ordinary `DiffusionModel`: its EMA weights, sampling with
        `default_spec` (the `.keras` snapshot a run keeps of each round's student)."""
        network = keras.models.clone_model(self.ema_network)
        network.set_weights(self.ema_network.get_weights())
        return DiffusionModel(
            network,
            self.diffusion,
            ema_decay=self.ema_decay,
            label_dropout=self.label_dropout,
            seed=self.seed,
            sampling=self.default_spec,
        )

    def _ema_age(self) -> tf.Tensor:
        """The EMA warm-up restarts at each round."""
        starts = tf.constant(self.halving.starts, self.step_counter.dtype)
        return self.step_counter - tf.gather(starts, self.halving.round_tensor(self.step_counter))

    # ---------------------------------------------------------------------------------- training
    def _x0(self, network, x_t, t, labels, bound: bool, training: bool = False) -> tf.Tensor:
        """The x_0 prediction of `network` at x_t, process indices t [B], bounded if asked."""
        output = call_network(network, x_t, t, labels, training=training)
        clip, threshold = (self.clip_denoised, self.dynamic_threshold) if bound else (False, 0.0)
        return self.diffusion._p_mean_variance(output, x_t, t, clip, threshold)["pred_xstart"]

    def _landing(self, x_t, i, n, labels) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(t, s, x_s): step i [B] of the n-step grid, from index t to s, and the point x_s where
        the teacher's two DDIM steps t -> m -> s from x_t land."""
        t, m, s = self.halving.indices(i, n)
        x_m = ddim_move(self._abar, x_t, self._x0(self.teacher_network, x_t, t, labels, True), t, m)
        x_s = ddim_move(self._abar, x_m, self._x0(self.teacher_network, x_m, m, labels, True), m, s)
        return t, s, x_s

    def teacher_target(self, x_t, i, n, labels=None) -> tf.Tensor:
        """The student's target x~_0 at x_t for step i [B] of its n-step grid: the teacher's two
        DDIM steps t -> m -> s, then `step_target` (the module docstring of `halving`); with
        `method="consistency"`, `consistency_target`."""
        if self.method == "consistency":
            return self.consistency_target(x_t, i, n, labels)
        t, s, x_s = self._landing(x_t, i, n, labels)
        return tf.stop_gradient(step_target(self._abar, x_t, x_s, t, s))

    def consistency_target(self, x_t, i, n, labels=None) -> tf.Tensor:
        """The consistency target at x_t for step i [B] of the n-step grid: the student's own x_0
        (no gradient, no dropout) at the teacher's landing point x_s, or x_s itself where s is
        the data (-1)."""
        _, s, x_s = self._landing(x_t, i, n, labels)
        x0 = self._x0(self.network, x_s, tf.maximum(s, 0), labels, bound=False)
        at_data = tf.reshape(s < 0, [-1, *([1] * (x_s.shape.rank - 1))])
        return tf.stop_gradient(tf.where(at_data, x_s, x0))

    def _weight(self, t, s) -> tf.Tensor:
        """[B] weights of the squared x_0 errors of steps t -> s (`loss_weighting`)."""
        like = tf.zeros_like(t, tf.float32)  # [B]: the weights broadcast against the errors
        if self.loss_weighting == "uniform":
            return like + 1.0
        if self.loss_weighting == "truncated_snr":
            ab_t = tf.gather(tf.constant(self._abar, tf.float32), t + 1)
            return tf.maximum(ab_t / (1.0 - ab_t), 1.0)
        return tf.square(landing_factor(self._abar, t, s, like))

    def _draw_steps(self, seed, local_batch, replica, replicas, n) -> tf.Tensor:
        """Student steps i [local_batch], uniform on [0, n), this replica's rows."""
        bits = rng.uniform_bits([local_batch * replicas], rng.fold_in(seed, 5))
        unit = rng.bits_to_unit(bits)
        i = tf.minimum(tf.cast(tf.floor(unit * tf.cast(n, tf.float32)), tf.int32), n - 1)
        return tf.gather(i, tf.range(replica * local_batch, (replica + 1) * local_batch))

    def _student_problem(self, images, labels, seed, n, replica, replicas, drop_labels: bool):
        """(x_t, t, s, labels, target): a step of the n-step grid per image, x_t ~ q(x_t | x_0)
        at its start t (s its end), the labels (with the null class where dropped, if asked)
        and the teacher's target there."""
        batch = tf.shape(images)[0]
        i = self._draw_steps(seed, batch, replica, replicas, n)
        _, _, noise, drop = self._draw(seed, batch, replica, replicas, self.timestep_sampler)
        if drop_labels:
            labels = self._drop_labels(labels, drop)
        t, _, s = self.halving.indices(i, n)
        x_t = self.diffusion.q_sample(images, t, noise)
        return x_t, t, s, labels, self.teacher_target(x_t, i, n, labels)

    def train_step(self, data):
        # 1. The batch and this step's seed (the same on every replica, and on resume).
        images, labels = self._unpack(data)
        replica, replicas = self._replica()
        seed = self._step_seed()
        # 2. The round's grid, a student step per image, x_t there and label drops; 3. the
        # target: where the teacher's two steps land, as one step's x_0.
        n = self.halving.student_steps_of(self.halving.round_tensor(self.step_counter))
        x_t, t, s, labels, target = self._student_problem(
            images, labels, seed, n, replica, replicas, drop_labels=True
        )
        # 4. The student's x_0 error, weighted (`loss_weighting`).
        weight = self._weight(t, s)
        with tf.GradientTape() as tape, self._dropout_masks(seed, images, replica):
            x0 = self._x0(self.network, x_t, t, labels, bound=False, training=True)
            mse = mean_over_dims(tf.square(x0 - target))
            loss = tf.reduce_mean(weight * mse)
            scaled = self._scaled(loss, replicas)
        # 5. The update: clipped gradient, EMA, step counter.
        self._descend(tape, scaled, replicas)
        return self._report({"mse": mse}, loss, ("grad_norm",))

    def test_step(self, data):
        """The distillation loss of the EMA student on held-out images (no bound: the student
        is a sampler, not a density model)."""
        images, labels = self._unpack(data)
        replica, replicas = self._replica()
        seed = rng.fold_in(rng.as_seed(self.seed + 1), tf.cast(self.eval_counter, tf.int32))
        last = tf.maximum(self.step_counter - 1, 0)  # the weights' round, as `round`
        n = self.halving.student_steps_of(self.halving.round_tensor(last))
        x_t, t, _, labels, target = self._student_problem(
            images, labels, seed, n, replica, replicas, drop_labels=False
        )
        x0 = self._x0(self.ema_network, x_t, t, labels, bound=False)
        mse = mean_over_dims(tf.square(x0 - target))
        self.eval_counter.assign_add(1)
        return self._report({"mse": mse}, tf.reduce_mean(mse), ())

    # ----------------------------------------------------------------------------- serialization
    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("sampling", None)
        return {
            **config,
            "student_steps": self.student_steps,
            "teacher_steps": self.halving.teacher_steps,
            "round_steps": _json(self.halving.round_steps),
            "clip_denoised": self.clip_denoised,
            "dynamic_threshold": self.dynamic_threshold,
            "teacher": self.teacher,
            "loss_weighting": self.loss_weighting,
            "method": self.method,
        }


def _json(value: int | tuple[int, ...]) -> int | list[int]:
    return list(value) if isinstance(value, tuple) else value


class Rounds(keras.callbacks.Callback):
    """Starts each round of a `DistillationModel`'s `fit` after the first, before its first step
    (a run resumed there starts it too), calling `round_ends(model)` first with the student of
    the round that ended; and once more for the last round's when training reaches its end."""

    def __init__(self, round_ends: Callable[[DistillationModel], None] | None = None):
        super().__init__()
        self.round_ends = round_ends

    def _end(self) -> None:
        if self.round_ends is not None:
            self.round_ends(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        if self.model.round_starts():
            self._end()
            self.model.start_round()

    def on_train_end(self, logs=None):
        if self.model.step >= self.model.halving.total_steps:
            self._end()


def student_spec(
    steps: int, clip_denoised: bool = True, dynamic_threshold: float = 0.0
) -> SamplingSpec:
    """A student's sampler of `steps` calls: DDIM (eta 0) on `TrailingSteps(steps)`, its x_0
    bounded as given."""
    return SamplingSpec(
        method="ddim",
        steps=TrailingSteps(steps),
        clip_denoised=clip_denoised,
        dynamic_threshold=dynamic_threshold,
    )


def student_file(run_dir: str | Path, steps: int) -> Path:
    """The file of a distillation run's student of `steps` steps."""
    return Path(run_dir) / STUDENTS_DIR / f"steps{steps}.keras"


def kept_students(run_dir: str | Path) -> list[Path]:
    """The students a distillation run has kept, most steps first."""
    files = Path(run_dir).glob(f"{STUDENTS_DIR}/steps*.keras")
    steps = {int(f.stem.removeprefix("steps")): f for f in files if f.stem[5:].isdigit()}
    return [steps[n] for n in sorted(steps, reverse=True)]
