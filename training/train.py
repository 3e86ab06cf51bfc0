"""`ddpm-train`: train a DDPM from a named config, checkpointing so that a rerun resumes exactly.

    ddpm-train                                   # the embedded digits, ~10 minutes on 2 CPU cores
    ddpm-train --config fashion_mnist --data-dir ~/tfds train.steps=20000 run.sample_every=5000
    ddpm-train --config my_run.toml --run-dir runs/mine

Rerunning the same command continues from the newest checkpoint of the run directory; a run
directory holding a run with another config is refused (only `train.steps` and the `run.*`
bookkeeping may change, so a finished run can be extended).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddpm_tf import (  # noqa: E402
    DiffusionModel,
    GaussianDiffusion,
    default_optimizer,
    from_preset,
    get_beta_schedule,
)
from ddpm_tf.data import DatasetNotPreparedError, load_arrays, step_batches  # noqa: E402
from ddpm_tf.data import num_classes as data_num_classes  # noqa: E402
from ddpm_tf.distribute import make_strategy  # noqa: E402
from ddpm_tf.runs import CheckpointError, RunConfigError, RunDirectory  # noqa: E402
from training import callbacks as cb  # noqa: E402
from training.config import MAY_CHANGE, ConfigError, preset_names, resolve  # noqa: E402

EXIT_USAGE = 2
EXIT_NAN = 3

SAMPLE_SEED = 1234  # the grids of one run always show the same noise, so progress is visible


class UsageError(Exception):
    """A problem with the user's input, reported in one message with exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ddpm-train",
        description="Train a denoising diffusion model. With no arguments: the embedded digits "
        "dataset, no network needed.",
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
    return parser.parse_args(argv)


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


def build_model(config: dict, image_shape: tuple[int, int, int], num_classes: int | None):
    """The DiffusionModel of `config` for images of `image_shape`, compiled with its optimizer."""
    model_cfg = {
        k: tuple(v) if isinstance(v, list) else v  # TOML lists -> the tuples UNet's config holds
        for k, v in config["model"].items()
        if k != "preset" and v is not None
    }
    diff = config["diffusion"]
    train = config["train"]
    if image_shape[0] != image_shape[1]:
        raise UsageError(f"images must be square, got {image_shape}; set data.image_size.")
    network = from_preset(
        config["model"]["preset"],
        image_size=image_shape[0],
        in_channels=image_shape[2],
        learn_sigma=diff["var_type"] in ("learned", "learned_range"),
        num_classes=num_classes,
        **model_cfg,
    )
    diffusion = GaussianDiffusion(
        get_beta_schedule(diff["schedule"], num_timesteps=diff["timesteps"]),
        model_mean_type=diff["mean_type"],
        model_var_type=diff["var_type"],
        loss_type=diff["loss_type"],
    )
    model = DiffusionModel(
        network,
        diffusion,
        ema_decay=train["ema_decay"],
        timestep_sampler=train["timestep_sampler"],
        grad_clip_norm=train["grad_clip"] or None,
        label_dropout=train["label_dropout"],
        seed=train["seed"],
    )
    model.compile(default_optimizer(train["lr"], train["warmup"]), jit_compile=train["jit_compile"])
    return model


def train(args: argparse.Namespace) -> int:
    name, config = resolve(args.config, args.overrides)
    run = RunDirectory(args.run_dir or Path("runs") / name, keep=config["run"]["keep"])
    run.check_config(config, may_change=MAY_CHANGE)  # before any work, before writing anything
    train_cfg, run_cfg = config["train"], config["run"]
    if train_cfg["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    x_train, y_train, x_test, y_test = load_data(config, args.data_dir, args.download)
    num_classes = (
        data_num_classes(config["data"]["dataset"], data_dir=args.data_dir)
        if config["data"]["class_conditional"]
        else None
    )
    strategy = make_strategy(train_cfg["strategy"])
    keras.utils.set_random_seed(train_cfg["seed"])  # the initial weights follow the seed too
    with strategy.scope():
        model = build_model(config, x_train.shape[1:], num_classes)
    run.open(config, model)
    start = run.restore(model)
    total = train_cfg["steps"]
    print(
        f"run {run.path}: {config['data']['dataset']} {x_train.shape[0]} train / "
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
    dataset = step_batches(
        x_train,
        y_train,
        batch_size=batch,
        seed=train_cfg["seed"],
        start_step=start,
        random_flip=config["data"]["random_flip"],
    )
    test_batch = min(batch, x_test.shape[0])
    test_data = step_batches(x_test, y_test, batch_size=test_batch, seed=train_cfg["seed"] + 1)
    writer = tf.summary.create_file_writer(str(run.path / "logs"))
    guard = cb.NanGuard()
    checkpointer = cb.Checkpointer(run, run_cfg["checkpoint_every"], guard)
    samples = cb.Samples(
        run.path / "samples",
        run_cfg["sample_every"],
        writer,
        run_cfg["num_samples"],
        SAMPLE_SEED,
        sampler=run_cfg["sampler"],
        num_steps=None if run_cfg["sampler"] == "ancestral" else run_cfg["sample_steps"],
    )
    callbacks = [
        guard,
        cb.Progress(total, run_cfg["log_every"], writer),
        cb.Evaluation(test_data, run_cfg["eval_batches"], run_cfg["eval_every"], writer),
        checkpointer,
        samples,
    ]
    began = time.perf_counter()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=total - start,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    if guard.failed_step is not None:
        last = run.latest_checkpoint()
        print(
            f"ddpm-train: stopped: the loss became NaN or infinite at step {guard.failed_step}. "
            f"The newest good checkpoint is kept: {last or 'none yet'}. Try a lower train.lr, "
            "train.grad_clip=1.0, or turn off train.mixed_precision.",
            file=sys.stderr,
        )
        return EXIT_NAN
    checkpointer.save()
    grid = samples.write()
    writer.flush()
    print(
        f"done: step {cb.model_step(model)} in {time.perf_counter() - began:.0f} s; "
        f"checkpoint {run.latest_checkpoint()}; samples {grid}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except (
        ConfigError,
        RunConfigError,
        CheckpointError,
        DatasetNotPreparedError,
        UsageError,
        ValueError,
    ) as err:
        print(f"ddpm-train: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
