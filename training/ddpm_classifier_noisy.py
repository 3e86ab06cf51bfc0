"""`ddpm-classifier --noisy RUN_DIR`: a classifier of noisy images for classifier guidance.

    ddpm-classifier --noisy runs/fashion_uncond --data-dir ~/tfds --steps 4000

trains a `ddpm_tf.guidance.NoisyClassifier` (sized by `ddpm_tf.guidance.PRESETS` for the run's
images) on x_t ~ q(x_t | x_0) under the run's own diffusion, on the labels of the run's dataset,
into the classifier's run directory (`--out`, default RUN_DIR/noisy_classifier): config.json,
model.json, checkpoints/ (every `--checkpoint-every` steps and on SIGTERM), logs/ (TensorBoard),
and at the end classifier.keras, what `--noisy-classifier` of ddpm-sample and ddpm-eval read,
and report.json with its test accuracy at each of `ACCURACY_TIMESTEPS`. Rerunning the same
command resumes from the newest checkpoint exactly; only `--steps` may change (to extend a run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from ddpm_tf import cli
from ddpm_tf.data import cached_split, split_size, step_batches
from ddpm_tf.errors import InputError
from ddpm_tf.files import atomic_path
from ddpm_tf.guidance import CLASSIFIER_FILE, NoisyClassifier
from ddpm_tf.guidance.training import NoisyClassifierTraining
from ddpm_tf.keras_files import save_keras_atomic
from ddpm_tf.optimizers import WarmupSchedule
from ddpm_tf.pixels import scale_to_unit
from ddpm_tf.runs import RunDirectory, load_model
from ddpm_tf.training import ddpm_train_callbacks as cb

REPORT_FILE = "report.json"
ACCURACY_FRACTIONS = (0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)
"""Where the accuracy is measured, as fractions of the way from t = 0 to t = T - 1."""
ACCURACY_IMAGES = 2000  # test images per timestep
WARMUP_STEPS = 200
WEIGHT_DECAY = 0.05  # AdamW's, as guided-diffusion's classifier training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the --noisy mode."""
    parser.add_argument(
        "--noisy",
        metavar="RUN_DIR",
        type=Path,
        help="train a classifier of noisy images x_t for classifier guidance of this ddpm-train "
        "run (its data and diffusion) instead of the feature classifier",
    )
    parser.add_argument("--steps", type=int, help="--noisy: training steps (default 4000)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=500, help="--noisy: steps between checkpoints"
    )


def _check_args(args: argparse.Namespace) -> None:
    steps = 4000 if args.steps is None else args.steps
    for flag, value in (
        ("--steps", steps),
        ("--batch-size", args.batch_size),
        ("--checkpoint-every", args.checkpoint_every),
    ):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if not args.learning_rate > 0:
        raise InputError(f"--learning-rate must be > 0, got {args.learning_rate}")
    if args.epochs is not None:
        raise InputError("--epochs is the feature classifier's; --noisy trains for --steps.")
    if not isinstance(args.seed, int):
        raise InputError("--seed takes one int here (the seed of the timesteps and noise)")
    args.steps = steps


def _run_config(args: argparse.Namespace, data: dict) -> dict:
    return {
        "run": str(args.noisy.resolve()),
        "dataset": data["dataset"],
        "train_split": args.train_split,
        "test_split": args.test_split,
        "image_size": data["image_size"],
        "random_flip": data["random_flip"],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
    }


def _run_data(run_dir: Path) -> dict:
    saved = RunDirectory(run_dir).saved_config()
    if saved is None:
        raise FileNotFoundError(f"{run_dir} is not a ddpm-train run directory (no config.json).")
    data = saved["data"]
    if data["images"]:
        raise InputError(
            f"{run_dir} trains on an image folder; --noisy needs a tfds dataset with labels."
        )
    return data


def train(args: argparse.Namespace) -> None:
    """Trains (or resumes) the noisy classifier of `args.noisy`; see the module docstring."""
    _check_args(args)
    data = _run_data(args.noisy)
    model = load_model(args.noisy)  # the run's diffusion and image shape
    out = args.out or args.noisy / "noisy_classifier"
    if out.suffix == ".keras":
        raise InputError(f"--out is a directory for --noisy (the classifier's run), got {out}")
    config = _run_config(args, data)
    run = RunDirectory(out, keep=2)
    run.check_config(config, ("steps",))
    load = dict(data_dir=args.data_dir, download=args.download)
    sizes = {
        role: split_size(data["dataset"], config[f"{role}_split"], **load)
        for role in ("train", "test")
    }
    with run.lock():
        caches = {
            role: cached_split(
                run.data_dir / role,
                data["dataset"],
                config[f"{role}_split"],
                label_key="label",
                image_size=data["image_size"] or None,
                progress=cli.ProgressLine(f"decoding {role}", total, "images"),
                **load,
            )
            for role, total in sizes.items()
        }
        _fit(args, config, run, model, caches)


def _build(config: dict, model, num_classes: int) -> NoisyClassifierTraining:
    keras.utils.set_random_seed(config["seed"])
    classifier = NoisyClassifier.for_images(model.image_shape, num_classes, name="noisy_classifier")
    trainer = NoisyClassifierTraining(classifier, model.diffusion, seed=config["seed"])
    rate = WarmupSchedule(config["learning_rate"], WARMUP_STEPS)
    trainer.compile(optimizer=keras.optimizers.AdamW(rate, weight_decay=WEIGHT_DECAY))
    trainer.optimizer.build(classifier.trainable_variables)
    return trainer


def _fit(args, config: dict, run: RunDirectory, model, caches: dict) -> None:
    train_cache, test_cache = caches["train"], caches["test"]
    trainer = _build(config, model, train_cache.num_classes)
    start = run.restore(trainer)
    run.open(config, trainer)
    total = config["steps"]
    print(
        f"noisy classifier {run.path}: {config['dataset']} {len(train_cache)} train images "
        f"{train_cache.shape}, {train_cache.num_classes} classes, "
        f"{trainer.classifier.count_params():,} parameters, T={model.diffusion.num_timesteps}, "
        + (f"resuming at step {start}" if start else "starting at step 0")
        + f" of {total}",
        flush=True,
    )
    if start < total:
        _train(trainer, run, train_cache, config, start, args.checkpoint_every)
    _write_results(trainer, run, test_cache)


class _Clock(keras.callbacks.Callback):
    """Adds each step's wall time to the trainer's `train_seconds` (saved with checkpoints)."""

    def on_train_batch_begin(self, batch, logs=None):
        self._began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.model.train_seconds.assign_add(time.perf_counter() - self._began)


def _train(trainer, run: RunDirectory, cache, config: dict, start: int, every: int) -> None:
    total = config["steps"]
    dataset = step_batches(
        cache,
        cache.labels,
        batch_size=config["batch_size"],
        seed=config["seed"],
        start_step=start,
        random_flip=config["random_flip"],
    )
    writer = tf.summary.create_file_writer(str(run.path / "logs"))
    guard = cb.NanGuard()
    checkpointer = cb.Checkpointer(run, every, guard)
    signal = cb.SignalCheckpoint(checkpointer.save)
    progress = cb.Progress(total, max(1, min(100, total // 20)), writer)
    callbacks = [_Clock(), guard, progress, checkpointer, signal]
    trainer.fit(dataset, epochs=1, steps_per_epoch=total - start, callbacks=callbacks, verbose=0)
    writer.flush()
    if guard.failed_step is not None:
        raise cli.NonFiniteLoss(
            f"the loss became NaN or infinite at step {guard.failed_step}; the newest good "
            f"checkpoint is kept: {run.latest_checkpoint() or 'none yet'}. Try a lower "
            "--learning-rate."
        )
    if signal.preempted:
        raise cli.Failed(
            f"stopped at step {trainer.step} after a SIGTERM; saved a checkpoint of that step in "
            f"{run.checkpoint_dir}. Rerun the same command to resume."
        )
    checkpointer.save()


def accuracy_timesteps(num_timesteps: int) -> list[int]:
    """The timesteps of `ACCURACY_FRACTIONS` for a diffusion of `num_timesteps` steps."""
    return sorted({round(f * (num_timesteps - 1)) for f in ACCURACY_FRACTIONS})


def _write_results(trainer, run: RunDirectory, test_cache) -> None:
    """classifier.keras (atomically) and report.json: the test accuracy at each timestep."""
    path = save_keras_atomic(trainer.classifier, run.path / CLASSIFIER_FILE, "the classifier")
    count = min(ACCURACY_IMAGES, len(test_cache))
    images = scale_to_unit(test_cache.head(count)).numpy()
    labels = test_cache.labels[:count]
    timesteps = accuracy_timesteps(trainer.diffusion.num_timesteps)
    accuracy = trainer.accuracy_by_timestep(images, labels, timesteps)
    report = {
        "steps": trainer.step,
        "train_minutes": round(float(trainer.train_seconds.numpy()) / 60, 2),
        "parameters": trainer.classifier.count_params(),
        "test_images": count,
        "accuracy_by_timestep": {str(t): round(a, 4) for t, a in accuracy.items()},
        "classifier": str(path),
    }
    with atomic_path(run.path / REPORT_FILE, "the report") as scratch_report:
        scratch_report.write_text(json.dumps(report, indent=2) + "\n")
    table = ", ".join(f"t={t}: {a:.3f}" for t, a in accuracy.items())
    print(f"test accuracy by timestep ({count} images): {table}")
    print(f"saved {path} and {run.path / REPORT_FILE}", flush=True)
