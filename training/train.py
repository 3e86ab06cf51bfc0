"""`ddpm-train`: train a DDPM from a named config, checkpointing so that a rerun resumes exactly.

    ddpm-train                                   # the embedded digits, ~10 minutes on 2 CPU cores
    ddpm-train --config fashion_mnist --data-dir ~/tfds train.steps=20000 run.sample_every=5000
    ddpm-train --config my_run.toml --run-dir runs/mine

Rerunning the same command continues from the newest checkpoint of the run directory; a run
directory holding a run with another config is refused (only `train.steps`, the `run.*`
bookkeeping and the `[sampling]` of the grids may change, so a finished run can be extended).

Several machines: every worker runs the same command with `train.strategy=multi_worker` and its
own TF_CONFIG. Only the chief writes the run directory and prints progress; a SIGTERM to any
worker makes all of them save a checkpoint and stop, and rerunning the commands resumes.
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf import cli
from ddpm_tf.data import check_global_batch, distributed_step_batches, load_arrays
from ddpm_tf.data import num_classes as data_num_classes
from ddpm_tf.distribute import (
    ClusterTask,
    PreemptionCheckpoint,
    check_cluster,
    make_strategy,
    replica_values,
)
from ddpm_tf.recipe import build_model
from ddpm_tf.runs import RunDirectory
from ddpm_tf.sampling_spec import SamplingSpec
from ddpm_tf.training import callbacks as cb
from ddpm_tf.training.config import MAY_CHANGE, preset_names, resolve

SAMPLE_SEED = 1234  # the grids of one run always show the same noise, so progress is visible


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-train",
        "Train a denoising diffusion model. With no arguments: the embedded digits dataset, no "
        "network needed.",
    )
    parser.add_argument(
        "--config",
        default="digits",
        help=f"a preset ({', '.join(preset_names())}) or a .toml file (default: digits)",
    )
    parser.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    parser.add_argument("--data-dir", help="tfds data directory (default: tfds' own)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let tfds download and prepare the dataset if it is not on disk",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=100"
    )
    return parser


def load_data(config: dict, data_dir: str | None, download: bool):
    """(train images, train labels, test images, test labels) as uint8/int32 arrays."""
    data = config["data"]
    options = dict(
        data_dir=data_dir,
        download=download,
        image_size=data["image_size"] or None,
        label_key="label" if data["class_conditional"] else None,
    )
    train = load_arrays(data["dataset"], data["train_split"], **options)
    test = load_arrays(data["dataset"], data["test_split"], **options)
    return (*train, *test)


class _Discard(io.TextIOBase):
    """A stream that drops what is written: the progress lines of workers other than the chief."""

    def write(self, text: str) -> int:
        return len(text)


def _start(
    args: argparse.Namespace,
) -> tuple[dict, ClusterTask | None, RunDirectory, tf.distribute.Strategy]:
    """(config, cluster task, run directory, strategy), all checked before anything is written.

    The strategy is made before TensorFlow runs any op: a cluster's collective ops can only be
    configured at program start.
    """
    name, config = resolve(args.config, args.overrides)
    task = check_cluster(config["train"]["strategy"])  # TF_CONFIG
    run = RunDirectory(args.run_dir or Path("runs") / name, keep=config["run"]["keep"])
    run.check_config(config, may_change=MAY_CHANGE)  # before any work, before writing anything
    strategy = make_strategy(config["train"]["strategy"])
    check_global_batch(config["train"]["batch_size"], strategy.num_replicas_in_sync)
    run.chief = strategy.extended.should_checkpoint  # a worker other than the chief writes nowhere
    return config, task, run, strategy


def _check_same_start(strategy: tf.distribute.Strategy, start: int) -> None:
    """Raises unless every worker resumes at the same step (they read one run directory)."""
    starts = replica_values(strategy, start)
    if len(set(starts)) > 1:
        raise ValueError(
            f"the workers found checkpoints of different steps {starts}: resuming needs one run "
            "directory that every worker reads (a shared file system). Pass the shared "
            "directory as --run-dir on every worker, or a new one to start afresh."
        )


def _describe(run: RunDirectory, task: ClusterTask | None, replicas: int) -> str:
    """Who this process is in the run, for its first line."""
    if task is None or run.chief:
        return f"run {run.path}" + (f" ({replicas} replicas)" if replicas > 1 else "")
    return f"{task} of {task.size} (not the chief, which writes {run.path} and reports)"


@dataclass
class _Callbacks:
    """The callbacks of one training run; the chief's alone write files and print progress."""

    guard: cb.NanGuard
    checkpointer: cb.Checkpointer
    logs: list[keras.callbacks.Callback]  # progress and evaluation
    samples: cb.Samples | None  # the chief's
    preemption: PreemptionCheckpoint | None  # in a cluster

    def all(self) -> list[keras.callbacks.Callback]:
        extra = [c for c in (self.samples, self.preemption) if c is not None]
        return [self.guard, *self.logs, self.checkpointer, *extra]


def _callbacks(
    config: dict,
    run: RunDirectory,
    strategy: tf.distribute.Strategy,
    task: ClusterTask | None,
    writer: tf.summary.SummaryWriter,
    test_data: tf.data.Dataset | tf.distribute.DistributedDataset,
    test_images: np.ndarray,
) -> _Callbacks:
    """The run's callbacks; a worker other than the chief logs nowhere and draws no grids."""
    run_cfg = config["run"]
    stream = None if run.chief else _Discard()
    guard = cb.NanGuard()
    checkpointer = cb.Checkpointer(run, run_cfg["checkpoint_every"], guard)
    logs = [
        cb.Progress(config["train"]["steps"], run_cfg["log_every"], writer, stream),
        cb.Evaluation(
            test_data,
            run_cfg["eval_batches"],
            run_cfg["eval_every"],
            writer,
            bpd_images=test_images[: run_cfg["bpd_examples"]] if run.chief else None,
            stream=stream,
        ),
    ]
    samples = cb.Samples(
        run.path / "samples",
        run_cfg["sample_every"],
        writer,
        run_cfg["num_samples"],
        SAMPLE_SEED,
        SamplingSpec.from_dict(config["sampling"]),
    )
    preemption = PreemptionCheckpoint(strategy, checkpointer.save) if task is not None else None
    return _Callbacks(guard, checkpointer, logs, samples if run.chief else None, preemption)


def train(args: argparse.Namespace) -> int:
    """Trains (or resumes) the run of `args`; see the module docstring."""
    config, task, run, strategy = _start(args)
    train_cfg = config["train"]
    if train_cfg["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    x_train, y_train, x_test, y_test = load_data(config, args.data_dir, args.download)
    num_classes = (
        data_num_classes(config["data"]["dataset"], data_dir=args.data_dir)
        if config["data"]["class_conditional"]
        else None
    )
    keras.utils.set_random_seed(train_cfg["seed"])  # the initial weights follow the seed too
    with strategy.scope():
        model = build_model(config, x_train.shape[1:], num_classes)
    run.open(config, model)
    start = run.restore(model)
    if task is not None:
        _check_same_start(strategy, start)
    total, replicas = train_cfg["steps"], strategy.num_replicas_in_sync
    print(
        f"{_describe(run, task, replicas)}: {config['data']['dataset']} {x_train.shape[0]} train / "
        f"{x_test.shape[0]} test images {x_train.shape[1:]}, "
        f"{model.network.count_params():,} parameters, "
        + (f"resuming at step {start}" if start else "starting at step 0")
        + f" of {total}",
        flush=True,
    )
    if start >= total:
        print(f"nothing to do: the run is at step {start} >= train.steps={total}.")
        return 0

    batch = train_cfg["batch_size"]
    dataset = distributed_step_batches(
        strategy,
        x_train,
        y_train,
        batch_size=batch,
        seed=train_cfg["seed"],
        start_step=start,
        random_flip=config["data"]["random_flip"],
    )
    test_batch = min(batch, x_test.shape[0] // replicas * replicas)
    test_data = distributed_step_batches(
        strategy, x_test, y_test, batch_size=test_batch, seed=train_cfg["seed"] + 1
    )
    writer = (
        tf.summary.create_file_writer(str(run.path / "logs"))
        if run.chief
        else tf.summary.create_noop_writer()
    )
    callbacks = _callbacks(config, run, strategy, task, writer, test_data, x_test)
    began = time.perf_counter()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=total - start,
        callbacks=callbacks.all(),
        shuffle=False,
        verbose=0,
    )
    _stop_if_interrupted(model, run, callbacks)
    callbacks.checkpointer.save()
    grid = callbacks.samples.write() if callbacks.samples else None
    writer.flush()
    done = f"done: step {model.step} in {time.perf_counter() - began:.0f} s"
    if run.chief:
        print(f"{done}; checkpoint {run.latest_checkpoint()}; samples {grid}", flush=True)
    else:
        print(f"{task}: {done}; the chief wrote the checkpoints and samples", flush=True)
    return 0


def _stop_if_interrupted(model: keras.Model, run: RunDirectory, callbacks: _Callbacks) -> None:
    """Raises if `fit` stopped early: a non-finite loss, or a SIGTERM (preemption)."""
    failed = callbacks.guard.failed_step
    if failed is not None:
        raise cli.NonFiniteLoss(
            f"the loss became NaN or infinite at step {failed}. The newest good "
            f"checkpoint is kept: {run.latest_checkpoint() or 'none yet'}. Try a lower train.lr, "
            "train.grad_clip=1.0, or turn off train.mixed_precision."
        )
    if callbacks.preemption is not None and callbacks.preemption.preempted:
        raise cli.Failed(
            f"stopped at step {model.step} after a SIGTERM to a worker; every worker saved a "
            f"checkpoint of that step (the chief's in {run.checkpoint_dir}). Rerun the same "
            "command on every worker to resume."
        )


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-train; returns the exit code (0 done, 1 failed, 2 bad input, 3 non-finite loss)."""
    return cli.main(build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
