"""Keras callbacks of the training program: progress, logs, samples, evaluation, checkpoints, NaN guard.

Progress and Evaluation print a line, write TensorBoard scalars and record the same values in
the run's training curve (`curve.TrainingCurve`, curve.csv).

All of them key on the model's step counter (the number of finished training steps), which is
restored with a checkpoint, so a resumed run logs, samples and saves at the same steps as an
uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf.cli import format_duration
from ddpm_tf.evaluation import fid_from_features, real_floor
from ddpm_tf.features import FeatureExtractor
from ddpm_tf.likelihood import bits_per_dim
from ddpm_tf.pixels import make_grid, save_grid, unit_to_uint8
from ddpm_tf.runs import RunDirectory
from ddpm_tf.sampling import every_class, generate_uint8
from ddpm_tf.sampling.spec import SamplingSpec
from ddpm_tf.training.ddpm_train_curve import TrainingCurve


def due(model: keras.Model, every: int) -> bool:
    """Whether the step just taken ends an interval of `every` steps or is one of the model's
    `milestones` (a distillation's round ends)."""
    step = model.step
    return step % every == 0 or step in model.milestones


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss; `failed_step` tells where (None if never)."""

    def __init__(self):
        super().__init__()
        self.failed_step: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.failed_step = self.model.step
            self.model.stop_training = True


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint every `every` steps, never after a non-finite loss."""

    def __init__(self, run: RunDirectory, every: int, guard: NanGuard):
        super().__init__()
        self.run, self.every, self.guard = run, every, guard
        self.last_saved: int | None = None

    def save(self) -> None:
        step = self.model.step
        if self.guard.failed_step is None and step != self.last_saved:
            self.run.save(self.model)
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if self.model.step % self.every == 0:
            self.save()


class SignalCheckpoint(keras.callbacks.Callback):
    """A single-process run's answer to SIGTERM (a scheduler's or `timeout`'s stop): finish the
    current step, save a checkpoint of it and stop `fit`; `preempted` then is True.

    Installs its handler when training begins (in the main thread) and puts the previous one back
    when training ends. A cluster uses `ddpm_tf.distribute.PreemptionCheckpoint` instead, which
    agrees on the step with the other workers.
    """

    def __init__(self, save: Callable[[], object]):
        super().__init__()
        self.save, self.preempted = save, False
        self._signalled = False
        self._previous = None

    def _on_signal(self, signum, frame) -> None:
        self._signalled = True

    def on_train_begin(self, logs=None):
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def on_train_batch_end(self, batch, logs=None):
        if self._signalled and not self.preempted:
            self.save()
            self.preempted = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Progress(keras.callbacks.Callback):
    """A progress line every `every` steps: step, share done, windowed losses, rate and ETA.

    Also writes the window means and the learning rate to TensorBoard, then resets the model's
    metrics so the next window starts afresh.
    """

    def __init__(
        self,
        total_steps: int,
        every: int,
        writer: tf.summary.SummaryWriter,
        stream: TextIO | None = None,
        curve: TrainingCurve | None = None,
    ):
        super().__init__()
        self.total, self.every, self.writer, self.stream = total_steps, every, writer, stream
        self.curve = curve
        self._t0: float | None = None
        self._step0 = 0

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.step
        if self._t0 is None:  # the first step traces the graph: time from its end
            self._t0, self._step0 = time.perf_counter(), step
        if step % self.every and step != self.total:
            return
        logs = {k: float(np.mean(v)) for k, v in (logs or {}).items()}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        with self.writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/lr", lr)
        if self.curve is not None:
            self.curve.record(step, {**logs, "lr": lr})
        elapsed = time.perf_counter() - self._t0
        rate = (step - self._step0) / elapsed if elapsed > 0 and step > self._step0 else math.nan
        eta = (self.total - step) / rate if rate > 0 else math.nan
        losses = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
        print(
            f"step {step}/{self.total} {100 * step / self.total:3.0f}% | {losses} | lr {lr:.2e} | "
            f"{rate:.2f} steps/s | ETA {format_duration(eta)}",
            file=self.stream or sys.stdout,
            flush=True,
        )
        self.model.reset_metrics()


def spec_of(model: keras.Model, spec: SamplingSpec) -> SamplingSpec:
    """How a run samples its grids and FID: the model's own spec (a distillation's current
    round), else the config's [sampling] `spec`."""
    return model.default_spec or spec


class Samples(keras.callbacks.Callback):
    """Every `every` steps: a PNG grid of EMA samples (fixed seed) and the same grid in TensorBoard.

    A class-conditional model draws every class in turn (`every_class`), as the FID does.
    """

    def __init__(
        self,
        directory: Path,
        every: int,
        writer: tf.summary.SummaryWriter,
        num_samples: int,
        seed: int,
        spec: SamplingSpec,
    ):
        super().__init__()
        self.directory, self.every, self.writer = directory, every, writer
        self.num_samples, self.seed, self.spec = num_samples, seed, spec
        self.last_written: int | None = None

    def write(self) -> Path:
        """The grid of the current step, sampled once however often it is asked for."""
        step = self.model.step
        path = self.directory / f"step_{step:08d}.png"
        if step == self.last_written:
            return path
        labels = every_class(self.num_samples, self.model.num_classes)
        images = unit_to_uint8(
            self.model.generate(
                self.num_samples, seed=self.seed, labels=labels, spec=spec_of(self.model, self.spec)
            )
        ).numpy()
        save_grid(images, path)
        with self.writer.as_default(step=step):
            tf.summary.image("samples", make_grid(images)[None], step=step)
        self.last_written = step
        return path

    def on_train_batch_end(self, batch, logs=None):
        if due(self.model, self.every):
            self.write()


class SampleFid:
    """FID of `num_samples` fresh samples against the test images, on a classifier's features.

    A cheap score to watch during training: the same seeds and `spec` at every evaluation, so the
    curve moves with the model only. FID is biased upwards at small counts, so the floor (as many
    training images scored against the same test images) is computed once, at the same count,
    and reported beside it.

    Args:
        extractor: the features, e.g. `ClassifierFeatures("runs/digits_classifier.keras")`.
        test_images: uint8 [N, H, W, C], the real images the samples are compared with.
        floor_images: uint8 [num_samples, H, W, C] training images for the floor.
        spec: how the samples are drawn (unless the model has its own, `spec_of`); seed: their
            seed.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        test_images: np.ndarray,
        floor_images: np.ndarray,
        spec: SamplingSpec,
        seed: int,
    ):
        self.extractor, self.spec, self.seed = extractor, spec, seed
        self.num_samples = len(floor_images)
        self.real = extractor(test_images)
        self.floor = real_floor(self.real, extractor(floor_images), size=self.num_samples)

    def __call__(self, model: keras.Model) -> dict[str, float]:
        """{"fid", "fid_floor", "fid_seconds"} of the model's samples now."""
        began = time.perf_counter()
        labels = every_class(self.num_samples, model.num_classes)
        spec = spec_of(model, self.spec)
        images = generate_uint8(model, self.num_samples, self.seed, spec, labels=labels)
        fid = fid_from_features(self.extractor(images), self.real)
        return {
            "fid": fid,
            "fid_floor": self.floor["fid_floor"],
            "fid_seconds": time.perf_counter() - began,
        }


class Evaluation(keras.callbacks.Callback):
    """Every `every` steps, with the EMA weights: the test loss on a few batches and the bound.

    The bound is the exact one (`likelihood.bits_per_dim`: L_T + every L_t + the decoder, T network
    calls per image) on a fixed subset of test images, reported as its mean with the standard
    error over the subset: an estimate whose spread is known, unlike the single-t estimate
    `vlb_bpd` of `test_step` (unbiased but heavy-tailed), which is logged beside it. With
    `fid`, also the FID of a few samples (`SampleFid`).
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        batches: int,
        every: int,
        writer: tf.summary.SummaryWriter,
        bpd_images: np.ndarray | None = None,
        stream: TextIO | None = None,
        curve: TrainingCurve | None = None,
        fid: SampleFid | None = None,
    ):
        super().__init__()
        self.dataset, self.batches, self.every = dataset, batches, every
        self.writer, self.bpd_images, self.stream = writer, bpd_images, stream
        self.curve, self.fid = curve, fid

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.step
        if not due(self.model, self.every):
            return
        results = self.model.evaluate(self.dataset, steps=self.batches, verbose=0, return_dict=True)
        results = {k: float(np.mean(v)) for k, v in results.items()}
        line = f"eval at step {step}: loss {results['loss']:.4g}"
        if self.bpd_images is not None and len(self.bpd_images):
            bound = bits_per_dim(self.model, self.bpd_images, len(self.bpd_images))
            results["bpd"], results["bpd_stderr"] = bound["bpd"], bound["bpd_stderr"] or 0.0
            line += (
                f" | bpd {bound['bpd']:.4g} +- {results['bpd_stderr']:.2g} "
                f"(exact bound, {bound['num_examples']} test images)"
            )
        if self.fid is not None:
            results.update(self.fid(self.model))
            line += (
                f" | fid {results['fid']:.4g} (floor {results['fid_floor']:.3g}, "
                f"{self.fid.num_samples} samples, "
                f"{spec_of(self.model, self.fid.spec).describe()}, "
                f"{results['fid_seconds']:.0f} s)"
            )
        with self.writer.as_default(step=step):
            for name, value in results.items():
                tf.summary.scalar(f"eval/{name}", value)
        if self.curve is not None:
            named = {"bpd", "bpd_stderr", "fid", "fid_floor"}
            self.curve.record(
                step, {k if k in named else f"test_{k}": v for k, v in results.items()}
            )
        print(line, file=self.stream or sys.stdout, flush=True)
        self.model.reset_metrics()
