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
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from ddpm_tf import cli
from ddpm_tf.data import cached_split, split_size, step_batches
from ddpm_tf.datasets.image_folder import scan_folder
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
        help=f"a preset ({', '.join(preset_names())}) or a .toml file (default: digits, or "
        "folder64 with --images)",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="train on your own PNG/JPEG files in DIR (recursively; sets data.images)",
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


def resolve_args(args: argparse.Namespace) -> tuple[str, dict]:
    """(name, config) of the command line: --config (digits, or folder64 with --images), then
    the overrides, then --images."""
    overrides = [*args.overrides, *([f"data.images={args.images!r}"] if args.images else [])]
    return resolve(args.config or ("folder64" if args.images else "digits"), overrides)


def open_data(config: dict, run: RunDirectory, data_dir: str | None, download: bool):
    """(train, test) pixel caches in the run's data directory, decoded on the first start.

    A folder (data.images) holds out a fixed 5% for evaluation; a tfds dataset gives its two
    splits. Later starts of the run reuse the caches, so they decode nothing again. Training reads
    its batches from the cache file as it goes, for every size of dataset: the in-memory path is
    not faster where it matters (both give hundreds of batches per second or more, far above the
    training rate: `python bench/input_pipeline.py`), and one path is one behaviour to test.
    """
    data = config["data"]
    if data["images"]:
        folder = scan_folder(data["images"], data["class_conditional"])
        progress = cli.ProgressLine("decoding images", len(folder.paths), "images")
        return folder.cache(run.data_dir, data["image_size"], data["channels"], progress)
    caches = []
    for role in ("train", "test"):
        split = data[f"{role}_split"]
        total = split_size(data["dataset"], split, data_dir, download)
        caches.append(
            cached_split(
                run.data_dir / role,
                data["dataset"],
                split,
                data_dir=data_dir,
                download=download,
                label_key="label" if data["class_conditional"] else None,
                image_size=data["image_size"] or None,
                progress=cli.ProgressLine(f"decoding {split}", total, "images"),
            )
        )
    return tuple(caches)


def train(args: argparse.Namespace) -> int:
    """Trains (or resumes) the run of `args`; see the module docstring."""
    name, config = resolve_args(args)
    run = RunDirectory(args.run_dir or Path("runs") / name, keep=config["run"]["keep"])
    run.check_config(config, may_change=MAY_CHANGE)  # before any work, before writing anything
    train_cfg, run_cfg = config["train"], config["run"]
    if train_cfg["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    fresh = not run.path.exists()
    try:
        train_cache, test_cache = open_data(config, run, args.data_dir, args.download)
    except BaseException:
        if fresh:  # a failed first start leaves no directory behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    strategy = make_strategy(train_cfg["strategy"])
    keras.utils.set_random_seed(train_cfg["seed"])  # the initial weights follow the seed too
    with strategy.scope():
        model = build_model(config, train_cache.shape, train_cache.num_classes)
    run.open(config, model)
    start = run.restore(model)
    total = train_cfg["steps"]
    print(
        f"run {run.path}: {config['data']['dataset'] or config['data']['images']} "
        f"{len(train_cache)} train / {len(test_cache)} test images {train_cache.shape}, "
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
        train_cache,
        train_cache.labels,
        batch_size=batch,
        seed=train_cfg["seed"],
        start_step=start,
        random_flip=config["data"]["random_flip"],
    )
    test_data = step_batches(
        test_cache,
        test_cache.labels,
        batch_size=min(batch, len(test_cache)),
        seed=train_cfg["seed"] + 1,
    )
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
            bpd_images=test_cache.head(run_cfg["bpd_examples"]),
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
