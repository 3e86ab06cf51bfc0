"""Image input pipelines for diffusion training, built on tensorflow-datasets.

Images come out as float32 tensors of shape [B, H, W, C] scaled from uint8 [0, 255] to
[-1, 1], the range the DDPM forward process assumes for x_0. Datasets are never downloaded
unless asked: with ``download=False`` a dataset that is not prepared locally fails at once with
:class:`DatasetNotPreparedError` instead of tfds trying (and, offline, hanging on) the network.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ddpm_tf.checks import check_int
from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import resize_square, scale_to_unit

__all__ = [
    "RESIZE_METHODS",
    "DatasetNotPreparedError",
    "check_global_batch",
    "distribute",
    "cached_split",
    "distributed_step_batches",
    "load_arrays",
    "load_images",
    "split_size",
    "step_batches",
    "num_classes",
]

RESIZE_METHODS = ("area", "bilinear", "bicubic", "nearest", "lanczos3", "lanczos5", "mitchellcubic")


class DatasetNotPreparedError(FileNotFoundError):
    """A tfds dataset is not prepared in the data directory and downloading was not allowed."""


def _check_nonempty_str(value: object, arg: str) -> None:
    if not isinstance(value, str) or not value:
        raise InputError(f"{arg} must be a non-empty string, got {value!r}")


def _validate_args(
    name: object,
    split: object,
    batch_size: object,
    image_size: object,
    resize_method: object,
    shuffle_buffer: object,
    seed: object,
) -> None:
    _check_nonempty_str(name, "name")
    _check_nonempty_str(split, "split")
    check_int(batch_size, "batch_size")
    if image_size is not None:
        check_int(image_size, "image_size")
    if resize_method not in RESIZE_METHODS:
        raise InputError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}")
    check_int(shuffle_buffer, "shuffle_buffer", 0)
    if seed is not None:
        check_int(seed, "seed", -(2**63))


def _data_root(builder: tfds.core.DatasetBuilder) -> Path:
    """The data_dir a builder searches: its data path minus ``name/[config/]version``."""
    depth = 2 if builder.builder_config is None else 3
    return Path(os.fspath(builder.data_dir)).parents[depth - 1]


def _local_dataset_names(data_dir: str | None) -> list[str]:
    if data_dir is None or not os.path.isdir(data_dir):
        return []
    return [p.name for p in Path(data_dir).iterdir() if p.is_dir()]


def _get_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """Returns the tfds builder for ``name`` without touching the network.

    Raises:
        ValueError: if tfds knows no dataset ``name`` (neither registered nor in ``data_dir``).
    """
    import ddpm_tf.datasets  # noqa: F401  (registers the embedded datasets with tfds)

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as err:
        base = name.split("/")[0].split(":")[0]
        known = set(tfds.list_builders(with_community_datasets=False))
        candidates = sorted(known.union(_local_dataset_names(data_dir)))
        close = difflib.get_close_matches(base, candidates, n=5)
        hint = f" Did you mean one of {close}?" if close else ""
        raise InputError(f"name={name!r} is not a known tfds dataset.{hint}") from err


def _require_prepared(builder: tfds.core.DatasetBuilder, name: str) -> None:
    """Raises :class:`DatasetNotPreparedError` unless the dataset's files are on local disk."""
    if builder.is_prepared():
        return
    root = _data_root(builder)
    dataset_dir = root / builder.name
    found = sorted(p.name for p in dataset_dir.iterdir()) if dataset_dir.is_dir() else []
    found_msg = f" Found only {found} under {dataset_dir}." if found else ""
    raise DatasetNotPreparedError(
        f"Dataset {name!r} is not prepared in data_dir {str(root)!r} "
        f"(expected files in {os.fspath(builder.data_dir)!r}).{found_msg} "
        "Nothing was downloaded because download=False. To get it: pass download=True on a "
        f"machine with network access (or run `tfds build {builder.name} --data_dir {root}`), "
        f"or copy an already prepared tfds directory '{builder.name}/...' into {str(root)!r}."
    )


def _check_features(
    spec: dict[str, tf.TensorSpec],
    image_key: str,
    label_key: str | None,
    image_size: int | None,
) -> None:
    """Checks the decoded example spec: uint8 [H, W, C] image and optional integer scalar label."""
    if not isinstance(spec, dict):
        raise InputError(f"expected examples to be dicts of features, got {spec}")
    for arg, key in (("image_key", image_key), ("label_key", label_key)):
        if key is not None and key not in spec:
            raise InputError(f"{arg}={key!r} is not a feature; available keys: {sorted(spec)}")
    image = spec[image_key]
    if image.dtype != tf.uint8 or image.shape.rank != 3:
        raise InputError(
            f"image_key={image_key!r} must be a uint8 tensor of rank 3 (H, W, C), got "
            f"{image.dtype.name} with shape {image.shape}"
        )
    if image_size is None and None in image.shape[:2]:
        raise InputError(
            f"images in {image_key!r} have variable size {image.shape}; pass image_size so they "
            "can be batched"
        )
    if label_key is not None:
        label = spec[label_key]
        if not label.dtype.is_integer or label.shape.rank != 0:
            raise InputError(
                f"label_key={label_key!r} must be an integer scalar, got {label.dtype.name} "
                f"with shape {label.shape}"
            )


def _prepared_builder(name: str, data_dir: str | None, download: bool) -> tfds.core.DatasetBuilder:
    """The builder of a dataset that is on disk: prepared now if allowed, else checked.

    Builders marked ``OFFLINE_PREPARE`` (the embedded datasets of :mod:`ddpm_tf.datasets`) read
    files installed with Python packages, so they are always prepared on first use.
    """
    builder = _get_builder(name, data_dir)
    if download or getattr(builder, "OFFLINE_PREPARE", False):
        builder.download_and_prepare()
    else:
        _require_prepared(builder, name)
    return builder


def _examples(
    builder: tfds.core.DatasetBuilder,
    split: str,
    image_key: str,
    label_key: str | None,
    image_size: int | None,
    resize_method: str,
    center_crop: bool,
) -> tf.data.Dataset:
    """(uint8 image [H, W, C], int32 label) pairs of a prepared builder's split, in its fixed order."""
    if builder.info.splits:  # empty only under tfds.testing.mock_data, which makes any split
        _split_examples(builder, split)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    _check_features(ds.element_spec, image_key, label_key, image_size)

    def select(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = example[image_key]
        if image_size is not None:
            image = resize_square(image, image_size, resize_method, center_crop)
        label = tf.zeros((), tf.int32) if label_key is None else example[label_key]
        return image, tf.cast(label, tf.int32)

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def load_arrays(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = False,
    image_key: str = "image",
    label_key: str | None = "label",
    image_size: int | None = None,
    resize_method: str = "area",
    center_crop: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole split in memory: uint8 images [N, H, W, C] and int32 labels [N] (or None).

    For datasets that fit in RAM (digits, MNIST, CIFAR-10: up to ~150 MB), e.g. the test split
    that ddpm-eval scores; :func:`step_batches` draws batches from such arrays by index as it does
    from a :func:`cached_split` on disk.
    """
    _validate_args(name, split, 1, image_size, resize_method, 0, 0)
    builder = _prepared_builder(name, data_dir, download)
    ds = _examples(builder, split, image_key, label_key, image_size, resize_method, center_crop)
    images, labels = [], []
    for image, label in ds.batch(4096).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not images:
        raise InputError(f"split={split!r} of dataset {name!r} is empty.")
    return np.concatenate(images), None if label_key is None else np.concatenate(labels)


def _row_reader(images: np.ndarray | PixelCache) -> Callable[[tf.Tensor], tf.Tensor]:
    """rows [B] -> uint8 images [B, H, W, C], from memory or from a pixel cache on disk."""
    if isinstance(images, PixelCache):
        return images.gather
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(
            f"`images` must be uint8 [N, H, W, C], got {images.dtype} with shape {images.shape}."
        )
    pixels = tf.constant(images)
    return lambda rows: tf.gather(pixels, rows)


def step_batches(
    images: np.ndarray | PixelCache,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    random_flip: bool = False,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An endless stream of global batches in [-1, 1] whose batch s depends only on (seed, s).

    Example number i = s * batch_size + k of the stream is item `perm_e(i mod N)` of the arrays,
    where e = i // N is the epoch and perm_e a seeded permutation (`index_shuffle`, computed per
    index, never materialised). Flips are drawn from a stateless seed of (seed, s). Starting at
    `start_step` therefore gives exactly the batches an uninterrupted run sees from that step on,
    at no cost for skipping.

    `images` are uint8 [N, H, W, C] in memory or a `PixelCache` on disk (rows read as needed,
    so memory does not grow with N). With an `input_context` (of
    `strategy.distribute_datasets_from_function`), input pipeline k of K yields only rows
    [k B / K, (k + 1) B / K) of each global batch, flips included, so the workers together read
    exactly the global batch of one process (`batch_size` stays global).

    Yields float32 images [B, H, W, C] (or (images, int32 labels [B])), B / K rows per batch with
    an input context.
    """
    gather = _row_reader(images)
    count = len(images)
    check_int(batch_size, "batch_size")
    if batch_size > count:
        raise InputError(
            f"`batch_size`={batch_size} is larger than the dataset ({count} images); "
            "use a batch size of at most the dataset size."
        )
    if labels is not None and len(labels) != count:
        raise InputError(f"`labels` has {len(labels)} entries for {count} images.")
    check_int(start_step, "start_step", 0)
    share, offset = _pipeline_rows(batch_size, input_context)
    classes = None if labels is None else tf.constant(np.asarray(labels, np.int32))
    n = tf.constant(count, tf.int64)

    def batch(step: tf.Tensor):
        index = step * batch_size + offset + tf.range(share, dtype=tf.int64)
        epoch = index // n
        first = epoch[0]
        position = index % n

        def permuted(e):
            key = tf.stack([tf.constant(seed, tf.int64), e])
            return tf.random.experimental.index_shuffle(position, key, n - 1)

        # batch_size <= N, so a batch spans at most two epochs.
        rows = tf.where(epoch == first, permuted(first), permuted(first + 1))
        x = gather(rows)
        if random_flip:
            flip_seed = tf.stack([tf.constant(seed, tf.int64) + 1, step])
            flips = tf.random.stateless_uniform([batch_size], flip_seed, alg="philox")
            flip = flips[offset : offset + share] < 0.5  # drawn for the global batch
            x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        x = scale_to_unit(x)
        return x if classes is None else (x, tf.gather(classes, rows))

    steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    return steps.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def check_global_batch(batch_size: int, replicas: int) -> None:
    """Raises a one-line ValueError unless the global batch splits evenly over the replicas."""
    if batch_size % replicas:
        raise InputError(
            f"the global batch size {batch_size} is not divisible by the {replicas} replicas in "
            f"sync; use a multiple of {replicas}."
        )


def _pipeline_rows(batch_size: int, context: tf.distribute.InputContext | None) -> tuple[int, int]:
    """(rows, first row) of each global batch that the context's input pipeline reads."""
    if context is None:
        return batch_size, 0
    check_global_batch(batch_size, context.num_replicas_in_sync)
    rows = batch_size // context.num_input_pipelines
    return rows, context.input_pipeline_id * rows


def distributed_step_batches(
    strategy: tf.distribute.Strategy,
    images: np.ndarray | PixelCache,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    **options: Any,
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """`step_batches` for `strategy`: each worker builds only its own rows of every global batch.

    Through `strategy.distribute_datasets_from_function`: worker k's pipeline yields its rows of
    global batch s (see `step_batches`), split in order among its replicas, so replica r holds
    rows [r B / R, (r + 1) B / R), the rows whose noise `DiffusionModel.train_step` draws for it.
    With the default strategy this is `step_batches` itself. `options` are those of
    `step_batches` (seed, start_step, random_flip).
    """
    check_global_batch(batch_size, strategy.num_replicas_in_sync)

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        stream = step_batches(
            images, labels, batch_size=batch_size, input_context=context, **options
        )
        per_replica = context.get_per_replica_batch_size(batch_size)
        rows, _ = _pipeline_rows(batch_size, context)
        return stream if per_replica == rows else stream.rebatch(per_replica)

    return strategy.distribute_datasets_from_function(pipeline)


def load_images(
    name: str,
    split: str = "train",
    *,
    batch_size: int,
    data_dir: str | None = None,
    download: bool = False,
    image_key: str = "image",
    label_key: str | None = None,
    image_size: int | None = None,
    resize_method: str = "area",
    center_crop: bool = False,
    random_flip: bool = False,
    shuffle_buffer: int = 10_000,
    cache: bool | str = True,
    drop_remainder: bool = True,
    repeat: bool = False,
    seed: int | None = 0,
) -> tf.data.Dataset:
    """Builds a batched training pipeline of images in [-1, 1] from a tfds dataset.

    Pipeline: decode -> (crop/resize, uint8) -> cache -> shuffle -> repeat -> (flip) -> scale
    -> batch -> prefetch. Caching happens on the small uint8 images; flips come after the cache
    so every epoch sees fresh ones.

    Args:
        name: tfds name, optionally with config/version (``"mnist"``, ``"celeb_a:2.*.*"``).
        split: tfds split expression, e.g. ``"train"`` or ``"train[:90%]"``.
        batch_size: global batch size (split across replicas by :func:`distribute`).
        data_dir: tfds data directory; ``None`` uses the tfds default (``$TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        download: allow downloading and preparing the dataset. When False, a dataset missing
            from ``data_dir`` raises :class:`DatasetNotPreparedError` immediately.
        image_key: feature holding uint8 [H, W, C] images.
        label_key: if set, yield ``(images, labels)`` with int32 labels of shape [B].
        image_size: if set, resize images to ``image_size x image_size``.
        resize_method: a ``tf.image.resize`` method, see :data:`RESIZE_METHODS`.
        center_crop: cut the central square before resizing (keeps aspect ratio).
        random_flip: flip images left-right with probability 1/2, seeded by ``seed``.
        shuffle_buffer: shuffle buffer size in examples; 0 disables shuffling.
        cache: True caches decoded images in memory, a string caches to that file path,
            False disables caching.
        drop_remainder: drop the last partial batch so all batches (and replicas) are equal.
        repeat: repeat indefinitely (reshuffled each epoch).
        seed: seed for shuffling and flipping; the same seed reproduces the same stream.
            ``None`` gives a different stream on each construction.

    Returns:
        A dataset of float32 images [B, H, W, C] in [-1, 1], or ``(images, labels)``.

    Raises:
        ValueError: bad arguments, unknown dataset, or unsuitable features.
        DatasetNotPreparedError: the dataset is not on disk and ``download`` is False.
    """
    _validate_args(name, split, batch_size, image_size, resize_method, shuffle_buffer, seed)
    builder = _prepared_builder(name, data_dir, download)
    ds = _examples(builder, split, image_key, label_key, image_size, resize_method, center_crop)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(cache)
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    # One stateless seed pair per example from a seeded random stream: reproducible for a
    # fixed seed, different on each pass over the data.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment_and_scale(
        example: tuple[tf.Tensor, tf.Tensor], flip_seed: tf.Tensor
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        image, label = example
        if random_flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        image = scale_to_unit(image)
        return image if label_key is None else (image, label)

    ds = tf.data.Dataset.zip(ds, seeds).map(augment_and_scale, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def cached_split(
    directory: str | os.PathLike,
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = False,
    label_key: str | None = None,
    image_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PixelCache:
    """A tfds split decoded once into a `PixelCache` in `directory` (reused once finished).

    The split is read in its fixed order with tfds' parallel decoding and written as it goes,
    so memory stays flat for any size. `progress` gets the number of images written.
    """
    _validate_args(name, split, 1, image_size, "area", 0, 0)
    builder = _prepared_builder(name, data_dir, download)
    source = {
        "dataset": builder.info.full_name,
        "split": split,
        "image_size": image_size,
        "labels": label_key,
    }
    cache = PixelCache.reuse(directory, source)
    if cache is not None:
        return cache
    return PixelCache.build(
        directory,
        _examples(builder, split, "image", label_key, image_size, "area", False),
        num_classes=None if label_key is None else _class_count(builder, label_key),
        source=source,
        progress=progress,
    )


def split_size(name: str, split: str, data_dir: str | None = None, download: bool = False) -> int:
    """Number of examples of a tfds split (slices such as "train[:90%]" included).

    Raises `DatasetNotPreparedError` if the dataset is not on disk and `download` is False.
    """
    return _split_examples(_prepared_builder(name, data_dir, download), split)


def _split_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Number of examples of `split` (a name or a slice) of a prepared builder; an InputError
    naming the splits there are if it has no such split (tfds' own error is a bare ValueError)."""
    splits = builder.info.splits
    try:
        return int(splits[split].num_examples)
    except (KeyError, ValueError) as err:
        raise InputError(
            f"split={split!r} is not a split of {builder.name!r} ({err}); its splits are "
            f"{sorted(splits)}."
        ) from None


def image_shape(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> tuple[int, int, int]:
    """(H, W, C) of a tfds dataset's images as read here (square `image_size` if given)."""
    feature = _prepared_builder(name, data_dir, download).info.features["image"]
    height, width, channels = feature.shape
    if image_size:
        height = width = image_size
    if None in (height, width, channels):
        raise InputError(f"{name!r} has images of varying size {feature.shape}: set image_size.")
    return int(height), int(width), int(channels)


def num_classes(name: str, label_key: str = "label", data_dir: str | None = None) -> int:
    """Number of classes of a tfds ClassLabel feature, e.g. to size a class embedding."""
    return _class_count(_get_builder(name, data_dir), label_key)


def _class_count(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
    feature = builder.info.features[label_key]
    if not isinstance(feature, tfds.features.ClassLabel):
        raise InputError(f"label_key={label_key!r} is a {type(feature).__name__}, not a ClassLabel")
    return feature.num_classes


def distribute(
    dataset: tf.data.Dataset, strategy: tf.distribute.Strategy
) -> tf.distribute.DistributedDataset:
    """Splits each global batch of ``dataset`` across the replicas of ``strategy``.

    Each replica receives ``global_batch / strategy.num_replicas_in_sync`` examples.

    Raises:
        ValueError: if the static global batch size is not divisible by the replica count.
    """
    batch = tf.nest.flatten(dataset.element_spec)[0].shape[0]
    if batch is not None:
        check_global_batch(batch, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_dataset(dataset)
