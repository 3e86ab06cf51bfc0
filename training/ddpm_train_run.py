"""ddpm-train's run: data, model, callbacks and `fit`, from a resolved config to a finished run.

`train(args, (name, config), prepare)` is the whole of a training run once its config is known:
the checks before anything is written, the strategy, the one-writer lock, the pixel caches, the
model built or restored, the callbacks (progress, evaluation, checkpoints, grids, SIGTERM) and
`fit`. ddpm-train runs it on the config of its presets and overrides; ddpm-distill on a
distillation config, with a `prepare` that initialises the student and adds its round callback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ddpm_tf import cli, kernels, onednn
from ddpm_tf.config import DEFAULTS, DISTILL_DEFAULTS, MAY_CHANGE, precision_policy
from ddpm_tf.data import (
    cached_split,
    check_global_batch,
    distributed_step_batches,
    image_shape,
    split_size,
)
from ddpm_tf.datasets.image_folder import ImageFolder, scan_folder
from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.distribute import (
    ClusterTask,
    PreemptionCheckpoint,
    check_cluster,
    make_strategy,
    replica_values,
)
from ddpm_tf.errors import InputError
from ddpm_tf.features import ClassifierFeatures
from ddpm_tf.keras_files import KerasFileError
from ddpm_tf.recipe import build_model
from ddpm_tf.runs import CURVE_FILE, RunDirectory
from ddpm_tf.sampling.spec import SamplingSpec
from ddpm_tf.training import ddpm_train_callbacks as cb
from ddpm_tf.training.ddpm_train_curve import TrainingCurve

SAMPLE_SEED = 1234  # the grids of one run always show the same noise, so progress is visible
FID_TEST_IMAGES = 10_000  # at most this many test images are the FID's real statistics


def _progress(label: str, total: int, report: bool) -> cli.ProgressLine | None:
    return cli.ProgressLine(label, total, "images") if report else None


def check_data(config: dict, data_dir: str | None, download: bool) -> ImageFolder | dict[str, int]:
    """The training data of `config`, checked before anything is written: the scanned folder
    (data.images), or the number of images of each tfds split ({"train": N, "test": M}). Raises
    on a missing or empty folder, a dataset that is not prepared, a split it does not have."""
    data = config["data"]
    if data["images"]:
        return scan_folder(data["images"], data["class_conditional"])
    return {
        role: split_size(data["dataset"], data[f"{role}_split"], data_dir, download)
        for role in ("train", "test")  # both splits are checked before either is decoded
    }


def open_data(
    config: dict,
    root: Path,
    checked: ImageFolder | dict[str, int],
    data_dir: str | None,
    download: bool,
    report: bool = True,
) -> tuple[PixelCache, PixelCache]:
    """(train, test) pixel caches under `root` (the run's data/) of the data `check_data` found,
    decoded on the first start.

    A folder (data.images) holds out a fixed 5% for evaluation; a tfds dataset gives its two
    splits. Later starts of the run reuse the caches, so they decode nothing again; `report`
    prints a progress line while decoding (workers other than the chief stay quiet). Training reads
    its batches from the cache file as it goes, for every size of dataset: the in-memory path is
    not faster where it matters (both give hundreds of batches per second or more, far above the
    training rate: `python bench/input_pipeline.py`), and one path is one behaviour to test.
    """
    data = config["data"]
    if isinstance(checked, ImageFolder):
        progress = _progress("decoding images", len(checked.paths), report)
        return checked.cache(root, data["image_size"], data["channels"], progress)
    caches = []
    for role, total in checked.items():
        split = data[f"{role}_split"]
        caches.append(
            cached_split(
                root / role,
                data["dataset"],
                split,
                data_dir=data_dir,
                download=download,
                label_key="label" if data["class_conditional"] else None,
                image_size=data["image_size"] or None,
                progress=_progress(f"decoding {split}", total, report),
            )
        )
    return tuple(caches)


class _Discard(io.TextIOBase):
    """A stream that drops what is written: the progress lines of workers other than the chief."""

    def write(self, text: str) -> int:
        return len(text)


def _start(
    args: argparse.Namespace, name: str, config: dict
) -> tuple[ClusterTask | None, RunDirectory, tf.distribute.Strategy]:
    """(cluster task, run directory, strategy) of `config`, all checked before anything is
    written.

    The strategy is made before TensorFlow runs any op: a cluster's collective ops can only be
    configured at program start.
    """
    task = check_cluster(config["train"]["strategy"])  # TF_CONFIG
    run = RunDirectory(args.run_dir or Path("runs") / name, keep=config["run"]["keep"])
    defaults = {**DEFAULTS, **({"distill": DISTILL_DEFAULTS} if "distill" in config else {})}
    run.check_config(config, MAY_CHANGE, defaults)  # before any work, before writing anything
    strategy = make_strategy(config["train"]["strategy"])
    check_global_batch(config["train"]["batch_size"], strategy.num_replicas_in_sync)
    run.chief = strategy.extended.should_checkpoint  # a worker other than the chief writes nowhere
    return task, run, strategy


def _check_same_start(strategy: tf.distribute.Strategy, start: int) -> None:
    """Raises unless every worker resumes at the same step (they read one run directory)."""
    starts = replica_values(strategy, start)
    if len(set(starts)) > 1:
        raise InputError(
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
    samples: cb.Samples | None  # the chief's, unless run.num_samples=0
    preemption: PreemptionCheckpoint | cb.SignalCheckpoint  # SIGTERM: save, stop
    extra: list[keras.callbacks.Callback] = field(default_factory=list)  # `Prepare`'s

    def all(self) -> list[keras.callbacks.Callback]:
        samples = [self.samples] if self.samples is not None else []
        return [*self.extra, self.guard, *self.logs, self.checkpointer, *samples, self.preemption]


def _callbacks(
    config: dict,
    run: RunDirectory,
    strategy: tf.distribute.Strategy,
    task: ClusterTask | None,
    writer: tf.summary.SummaryWriter,
    test_data: tf.data.Dataset | tf.distribute.DistributedDataset,
    test_images: np.ndarray,
    start: int,
    fid: cb.SampleFid | None,
) -> _Callbacks:
    """The run's callbacks; a worker other than the chief logs nowhere and draws no grids."""
    run_cfg = config["run"]
    stream = None if run.chief else _Discard()
    curve = TrainingCurve(run.path / CURVE_FILE, start) if run.chief else None
    guard = cb.NanGuard()
    checkpointer = cb.Checkpointer(run, run_cfg["checkpoint_every"], guard)
    logs = [
        cb.Progress(config["train"]["steps"], run_cfg["log_every"], writer, stream, curve),
        cb.Evaluation(
            test_data,
            run_cfg["eval_batches"],
            run_cfg["eval_every"],
            writer,
            bpd_images=test_images[: run_cfg["bpd_examples"]] if run.chief else None,
            stream=stream,
            curve=curve,
            fid=fid,  # None on a worker other than the chief (`_fid_classifier`)
        ),
        *([curve] if curve else []),  # after the two: their values of a step share one row
    ]
    samples = (  # the chief's grids; run.num_samples=0: none
        cb.Samples(
            run.path / "samples",
            run_cfg["sample_every"],
            writer,
            run_cfg["num_samples"],
            SAMPLE_SEED,
            SamplingSpec.from_dict(config["sampling"]),
        )
        if run.chief and run_cfg["num_samples"]
        else None
    )
    preemption = (
        PreemptionCheckpoint(strategy, checkpointer.save)
        if task is not None
        else cb.SignalCheckpoint(checkpointer.save)
    )
    return _Callbacks(guard, checkpointer, logs, samples, preemption)


Prepare = Callable[[keras.Model, RunDirectory, int], list[keras.callbacks.Callback]]
"""prepare(model, run, start step) -> callbacks: a program's own start (ddpm-distill initialises
its student from the teacher at step 0) and callbacks, after the model is built or restored."""


def train(
    args: argparse.Namespace, resolved: tuple[str, dict], prepare: Prepare | None = None
) -> int:
    """Trains (or resumes) the run of `resolved` (name, config): `args` gives --run-dir (default
    runs/<name>), --data-dir and --download. Returns the exit code."""
    name, config = resolved
    task, run, strategy = _start(args, name, config)
    train_cfg = config["train"]
    fresh = run.chief and not run.path.exists()
    with (
        _data_directory(run) as root,
        _dtype_policy(precision_policy(train_cfg["mixed_precision"])),
    ):
        extractor = _fid_classifier(config, run, args)  # checked before the data is read
        checked = check_data(config, args.data_dir, args.download)
        with run.lock():  # the chief's, to the end: after the checks, before the first write
            try:
                train_cache, test_cache = open_data(
                    config, root, checked, args.data_dir, args.download, report=run.chief
                )
                fid = _sample_fid(config, extractor, train_cache, test_cache)
            except BaseException:
                if fresh:  # a failed first start leaves no directory behind
                    shutil.rmtree(run.path, ignore_errors=True)
                raise
            return _fit(config, task, run, strategy, train_cache, test_cache, fid, prepare)


def _fid_classifier(
    config: dict, run: RunDirectory, args: argparse.Namespace
) -> ClassifierFeatures | None:
    """The classifier of `run.fid_samples` (the chief's), checked against the run's image shape."""
    run_cfg, data = config["run"], config["data"]
    if not run_cfg["fid_samples"] or not run.chief:
        return None
    try:
        extractor = ClassifierFeatures(run_cfg["classifier"])
    except (FileNotFoundError, KerasFileError) as err:
        raise InputError(f"run.classifier: {err}, or set run.fid_samples=0.") from None
    if data["images"]:
        shape = (data["image_size"], data["image_size"], data["channels"])
    else:
        shape = image_shape(data["dataset"], args.data_dir, args.download, data["image_size"])
    if extractor.image_shape is not None and tuple(extractor.image_shape) != shape:
        raise InputError(
            f"run.classifier={run_cfg['classifier']!r} takes {extractor.image_shape} images but "
            f"this run trains on {shape}: give a classifier trained on this dataset "
            "(ddpm-classifier) or set run.fid_samples=0."
        )
    return extractor


def _sample_fid(
    config: dict,
    extractor: ClassifierFeatures | None,
    train_cache: PixelCache,
    test_cache: PixelCache,
) -> cb.SampleFid | None:
    """The FID probe of `run.fid_samples`: samples of the run's [sampling] against test images."""
    if extractor is None:
        return None
    count = config["run"]["fid_samples"]
    if count > len(train_cache):
        raise InputError(
            f"run.fid_samples={count} exceeds the {len(train_cache)} training images its floor "
            "draws from; lower it."
        )
    rows = np.sort(np.random.default_rng(0).choice(len(train_cache), count, replace=False))
    return cb.SampleFid(
        extractor,
        test_cache.head(FID_TEST_IMAGES),
        train_cache.read(rows),
        SamplingSpec.from_dict(config["sampling"]),
        SAMPLE_SEED,
    )


@contextlib.contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy `name` while the run builds and trains its model."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def _data_directory(run: RunDirectory) -> Iterator[Path]:
    """Where this worker decodes the data: the run's data/ for the chief, a temporary directory
    (removed at the end) for the others, which write nothing in the run directory."""
    if run.chief:
        yield run.data_dir
    else:
        with tempfile.TemporaryDirectory(prefix="ddpm-train-data-") as scratch:
            yield Path(scratch)


def _fit(config, task, run, strategy, train_cache, test_cache, fid, prepare=None) -> int:
    """Builds or restores the model and trains it to train.steps; returns the exit code."""
    train_cfg = config["train"]
    keras.utils.set_random_seed(train_cfg["seed"])  # the initial weights follow the seed too
    with strategy.scope():
        model = build_model(config, train_cache.shape, train_cache.num_classes)
    start = run.restore(model)  # a checkpoint that does not fit is refused before any write
    extra = prepare(model, run, start) if prepare is not None else []
    run.open(config, model)
    if task is not None:
        _check_same_start(strategy, start)
    total, replicas = train_cfg["steps"], strategy.num_replicas_in_sync
    print(
        f"{_describe(run, task, replicas)}: {config['data']['dataset'] or config['data']['images']} "
        f"{len(train_cache)} train / {len(test_cache)} test images {train_cache.shape}, "
        f"{model.network.count_params():,} parameters, "
        + (f"resuming at step {start}" if start else "starting at step 0")
        + f" of {total}",
        flush=True,
    )
    xla = train_cfg["jit_compile"]
    print(f"GroupNorm: {'XLA (train.jit_compile)' if xla else kernels.status()}", flush=True)
    print(f"oneDNN: {onednn.status()}", flush=True)
    if start >= total:
        print(f"nothing to do: the run is at step {start} >= train.steps={total}.")
        return 0

    batch = train_cfg["batch_size"]
    dataset = distributed_step_batches(
        strategy,
        train_cache,
        train_cache.labels,
        batch_size=batch,
        seed=train_cfg["seed"],
        start_step=start,
        random_flip=config["data"]["random_flip"],
    )
    test_batch = min(batch, len(test_cache) // replicas * replicas)
    test_data = distributed_step_batches(
        strategy, test_cache, test_cache.labels, batch_size=test_batch, seed=train_cfg["seed"] + 1
    )
    writer = (
        tf.summary.create_file_writer(str(run.path / "logs"))
        if run.chief
        else tf.summary.create_noop_writer()
    )
    test_images = test_cache.head(config["run"]["bpd_examples"])
    callbacks = _callbacks(config, run, strategy, task, writer, test_data, test_images, start, fid)
    callbacks.extra = extra
    began = time.perf_counter()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=total - start,
        callbacks=callbacks.all(),
        shuffle=False,
        verbose=0,
    )
    _stop_if_interrupted(model, run, callbacks, task)
    callbacks.checkpointer.save()
    grid = callbacks.samples.write() if callbacks.samples else None
    writer.flush()
    done = f"done: step {model.step} in {time.perf_counter() - began:.0f} s"
    if run.chief:
        wrote = f"samples {grid}" if grid else "no samples (run.num_samples=0)"
        print(f"{done}; checkpoint {run.latest_checkpoint()}; {wrote}", flush=True)
    else:
        print(f"{task}: {done}; the chief wrote the checkpoints and samples", flush=True)
    return 0


def _stop_if_interrupted(
    model: keras.Model, run: RunDirectory, callbacks: _Callbacks, task: ClusterTask | None
) -> None:
    """Raises if `fit` stopped early: a non-finite loss, or a SIGTERM (preemption)."""
    failed = callbacks.guard.failed_step
    if failed is not None:
        raise cli.NonFiniteLoss(
            f"the loss became NaN or infinite at step {failed}. The newest good "
            f"checkpoint is kept: {run.latest_checkpoint() or 'none yet'}. Try a lower "
            "train.learning_rate, train.grad_clip_norm=1.0, or turn off train.mixed_precision."
        )
    if callbacks.preemption.preempted:
        saved = (
            f"saved a checkpoint of that step in {run.checkpoint_dir}. Rerun the same command"
            if task is None
            else "every worker saved a checkpoint of that step (the chief's in "
            f"{run.checkpoint_dir}). Rerun the same command on every worker"
        )
        raise cli.Failed(
            f"stopped at step {model.step} after a SIGTERM{'' if task is None else ' to a worker'}; "
            f"{saved} to resume."
        )
