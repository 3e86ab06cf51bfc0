"""`NoisyClassifierTraining`: fits a `NoisyClassifier` to x_t ~ q(x_t | x_0) of a diffusion.

Each step draws t uniformly from the diffusion's T timesteps and the noise of q(x_t | x_0) from
(seed, step), as `DiffusionModel.train_step` does, so a run restored from a checkpoint (the
classifier, the optimizer and the step counter) continues exactly as if never stopped; the loss is
the cross-entropy of the classifier's logits at (x_t, t) against the labels.
`accuracy_by_timestep` measures what the classifier knows at each noise level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf import dropout as masks
from ddpm_tf import rng
from ddpm_tf.diffusion import GaussianDiffusion
from ddpm_tf.errors import InputError
from ddpm_tf.guidance.noisy_classifier import NoisyClassifier
from ddpm_tf.timesteps import UniformSampler

__all__ = ["NoisyClassifierTraining"]


@keras.saving.register_keras_serializable(package="ddpm_tf")
class NoisyClassifierTraining(keras.Model):
    """Trains `classifier` on the noisy images of `diffusion` (`fit` on (images in [-1, 1],
    labels) batches); `seed` seeds the timesteps and the noise."""

    def __init__(
        self,
        classifier: NoisyClassifier,
        diffusion: GaussianDiffusion | dict,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(diffusion, dict):
            diffusion = GaussianDiffusion.from_config(diffusion)
        if isinstance(classifier, dict):
            classifier = keras.saving.deserialize_keras_object(classifier)
        self.classifier = classifier
        self.diffusion = diffusion
        self.seed = int(seed)
        self.timesteps = UniformSampler(diffusion.num_timesteps)
        self.step_counter = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="step_counter"
        )
        self.train_seconds = self.add_weight(
            shape=(), dtype="float64", initializer="zeros", trainable=False, name="train_seconds"
        )
        """Wall time spent in training steps, over every start of the run (the program's clock)."""
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "accuracy")}
        self.built = True

    @property
    def step(self) -> int:
        """Finished training steps (restored with a checkpoint)."""
        return int(self.step_counter.numpy())

    def checkpoint_variables(self) -> list[tf.Variable]:
        """What a checkpoint holds besides the optimizer: the classifier, the step counter and
        the training time."""
        return [*self.classifier.weights, self.step_counter, self.train_seconds]

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def noisy(self, images: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(x_t, t) for images [B, H, W, C]: t uniform in [0, T), x_t ~ q(x_t | x_0), from `seed`."""
        t, _ = self.timesteps.sample(tf.shape(images)[0], rng.fold_in(seed, 1))
        noise = rng.normal(tf.shape(images), rng.fold_in(seed, 2))
        return self.diffusion.q_sample(images, t, noise), t

    def train_step(self, data):
        # 1. the step's batch and its seed, a function of (seed, step)
        images, labels = data
        images, labels = tf.cast(images, tf.float32), tf.cast(tf.reshape(labels, [-1]), tf.int32)
        seed = rng.fold_in(rng.as_seed(self.seed), tf.cast(self.step_counter, tf.int32))
        # 2. noisy images at uniform timesteps
        x_t, t = self.noisy(images, seed)
        # 3. cross-entropy of the classifier at (x_t, t); dropout masks keyed by the step
        with tf.GradientTape() as tape, masks.rows(rng.fold_in(seed, 3), 0):
            logits = self.classifier([x_t, t], training=True)
            losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.reduce_mean(losses)
        # 4. one optimizer step, then the counters and the running means
        variables = self.classifier.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.step_counter.assign_add(1)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        self.trackers["loss"].update_state(loss)
        self.trackers["accuracy"].update_state(tf.reduce_mean(correct))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def accuracy_by_timestep(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        timesteps: Sequence[int],
        seed: int = 0,
        batch_size: int = 256,
    ) -> dict[int, float]:
        """{t: the share of `images` (float [-1, 1], [N, H, W, C]) whose x_t ~ q(x_t | x_0) the
        classifier assigns to their `labels` [N]}, the noise drawn from (seed, t, batch)."""
        total = self.diffusion.num_timesteps
        bad = [int(t) for t in timesteps if not 0 <= int(t) < total]
        if bad:
            raise InputError(f"timesteps {bad} are outside [0, {total}).")
        predict = tf.function(lambda x, t: tf.argmax(self.classifier([x, t]), -1, tf.int32))
        result = {}
        for step in timesteps:
            correct = 0
            for index, start in enumerate(range(0, len(images), batch_size)):
                x0 = tf.constant(images[start : start + batch_size], tf.float32)
                t = tf.fill([len(x0)], int(step))
                noise = rng.normal(
                    tf.shape(x0), rng.fold_in(rng.fold_in(rng.as_seed(seed), step), index)
                )
                guess = predict(self.diffusion.q_sample(x0, t, noise), t).numpy()
                correct += int((guess == labels[start : start + batch_size]).sum())
            result[int(step)] = correct / len(images)
        return result

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "diffusion": self.diffusion.get_config(),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> NoisyClassifierTraining:
        return cls(**config)
