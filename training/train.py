"""`ddpm-train`: train a DDPM from a named config, checkpointing so that a rerun resumes exactly.

    ddpm-train                                   # the embedded digits, ~10 minutes on 2 CPU cores
    ddpm-train --config fashion_mnist --data-dir ~/tfds train.steps=20000 run.sample_every=5000
    ddpm-train --config my_run.toml --run-dir runs/mine

Rerunning the same command continues from the newest checkpoint of the run directory; a run
directory holding a run with another config is refused (only `train.steps`, the `run.*`
bookkeeping and the `[sampling]` of the grids may change, so a finished run can be extended).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import tensorflow as tf

from ddpm_tf import cli
from ddpm_tf.data import load_arrays, step_batches
from ddpm_tf.data import num_classes as data_num_classes
from ddpm_tf.distribute import make_strategy
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


def train(args: argparse.Namespace) -> int:
    """Trains (or resumes) the run of `args`; see the module docstring."""
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
        SamplingSpec.from_dict(config["sampling"]),
    )
    callbacks = [
        guard,
        cb.Progress(total, run_cfg["log_every"], writer),
        cb.Evaluation(
            test_data,
            run_cfg["eval_batches"],
            run_cfg["eval_every"],
            writer,
            bpd_images=x_test[: run_cfg["bpd_examples"]],
        ),
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
        raise cli.NonFiniteLoss(
            f"the loss became NaN or infinite at step {guard.failed_step}. The newest good "
            f"checkpoint is kept: {run.latest_checkpoint() or 'none yet'}. Try a lower train.lr, "
            "train.grad_clip=1.0, or turn off train.mixed_precision."
        )
    checkpointer.save()
    grid = samples.write()
    writer.flush()
    print(
        f"done: step {model.step} in {time.perf_counter() - began:.0f} s; "
        f"checkpoint {run.latest_checkpoint()}; samples {grid}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-train; returns the exit code (0 done, 1 failed, 2 bad input, 3 non-finite loss)."""
    return cli.main(build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
