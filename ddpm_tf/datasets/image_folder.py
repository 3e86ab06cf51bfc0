"""A folder of the user's own PNG and JPEG files as a dataset of square uint8 images.

Files are found recursively and taken in sorted order. With classes, the first-level subfolders are
the classes (sorted by name, numbered from 0) and only images inside them are used, as in
`keras.utils.image_dataset_from_directory`. Each image is center-cropped to its largest square and
resized to `image_size` (area averaging with antialiasing), in gray (1 channel) or RGB (3).

The files are decoded once, in parallel, into pixel caches (`ImageFolder.cache`: a training set
and a fixed 5% held out for evaluation), so later epochs and resumed runs never decode again. A
file that cannot be decoded (truncated, not an image) stops the build with an error that names it,
before any training: a dataset silently smaller than the folder would surprise more than a clear
message (`UnreadableImageError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import resize_square

__all__ = ["EXTENSIONS", "ImageFolder", "UnreadableImageError", "scan_folder"]

EXTENSIONS = (".png", ".jpg", ".jpeg")
HOLDOUT_SEED = 20_240_917  # fixes which files are held out for evaluation
BATCH = 256  # files decoded per write


class UnreadableImageError(InputError):
    """An image file of the folder cannot be decoded."""


@dataclass(frozen=True)
class ImageFolder:
    """The image files of a folder, in a fixed order, with their class indices (or None)."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None
    class_names: tuple[str, ...] | None

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def examples(
        self, image_size: int, channels: int, rows: np.ndarray | None = None
    ) -> tf.data.Dataset:
        """(uint8 image [S, S, C], int32 label) pairs of the files `rows` (default all), in order.

        Files are read and decoded in parallel; the order of the output is the order of `rows`.
        """
        rows = np.arange(len(self.paths)) if rows is None else np.asarray(rows)
        paths = tf.constant([self.paths[i] for i in rows])
        labels = (
            np.zeros(len(rows), np.int32) if self.labels is None else np.take(self.labels, rows)
        )
        pairs = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
        return pairs.map(
            lambda path, label: (decode(tf.io.read_file(path), image_size, channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def holdout(self) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, test rows): a fixed 5% of the files (1 to 1,000) held out for evaluation.

        Chosen by a permutation with a fixed seed, so every run on the same folder holds out the
        same files, spread over all classes and subfolders.
        """
        count = len(self.paths)
        if count < 2:
            raise InputError(
                f"image folder {self.root} holds {count} image; training needs at least 2 (one is "
                "held out for evaluation)."
            )
        held = min(1000, max(1, count // 20))
        order = np.random.default_rng(HOLDOUT_SEED).permutation(count)
        return np.sort(order[held:]), np.sort(order[:held])

    def cache(
        self,
        directory: str | os.PathLike,
        image_size: int,
        channels: int,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[PixelCache, PixelCache]:
        """(train, test) pixel caches under `directory` (built once; reused when finished).

        Raises `UnreadableImageError` naming the first file that does not decode; the unfinished
        cache is removed.
        """
        directory = Path(directory)
        caches, done = [], 0
        for name, rows in zip(("train", "test"), self.holdout(), strict=True):
            source = {
                "images": str(self.root.resolve()),
                "files": len(rows),
                "image_size": image_size,
                "channels": channels,
                "class_names": self.class_names,
            }
            cache = PixelCache.reuse(directory / name, source)
            if cache is None:
                cache = self._build(directory / name, rows, source, done, progress)
            caches.append(cache)
            done += len(rows)
        return caches[0], caches[1]

    def _build(self, target, rows, source, done, progress) -> PixelCache:
        written = [0]

        def count(n: int) -> None:
            written[0] = n
            if progress is not None:
                progress(done + n)

        try:
            return PixelCache.build(
                target,
                self.examples(source["image_size"], source["channels"], rows),
                num_classes=self.num_classes,
                source=source,
                progress=count,
                batch_size=BATCH,
            )
        except tf.errors.OpError as err:
            # Batches come out in order, so the bad file is in the batch after the last written.
            suspects = rows[written[0] : written[0] + BATCH]
            path, reason = self._first_unreadable(suspects) or ("a file", _reason(err))
            raise UnreadableImageError(
                f"{path} cannot be decoded as a PNG or JPEG image ({reason}); remove or replace "
                "it and run again."
            ) from None

    def _first_unreadable(self, rows: np.ndarray) -> tuple[str, str] | None:
        """(path, reason) of the first file among `rows` that does not decode, or None."""
        for i in rows:
            try:
                tf.io.decode_image(tf.io.read_file(self.paths[i]), expand_animations=False)
            except tf.errors.OpError as err:
                return self.paths[i], _reason(err)
        return None


def _reason(err: tf.errors.OpError) -> str:
    """TensorFlow's error message without its "{{function_node ...}}" prefix, on one line."""
    message = err.message.splitlines()[0] if err.message else type(err).__name__
    return message.split("}} ", 1)[-1]


def decode(data: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
    """PNG/JPEG bytes -> uint8 [image_size, image_size, channels], center-cropped and resized."""
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    return tf.ensure_shape(resize_square(image, image_size), [image_size, image_size, channels])


def _images_under(directory: Path) -> list[str]:
    found = []
    for parent, folders, files in os.walk(directory):
        folders.sort()
        found += [
            os.path.join(parent, name)
            for name in sorted(files)
            if name.lower().endswith(EXTENSIONS) and not name.startswith(".")
        ]
    return found


def scan_folder(directory: str | os.PathLike, class_conditional: bool = False) -> ImageFolder:
    """The images of `directory` (recursively); with `class_conditional`, one class per subfolder.

    Raises a ValueError naming the folder if it is missing, not a folder, or holds no image.
    """
    root = Path(directory).expanduser()
    if not root.exists():
        raise InputError(
            f"image folder {root} does not exist; pass the folder holding your images."
        )
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass the folder holding your images.")
    if not class_conditional:
        paths = _images_under(root)
        if not paths:
            raise InputError(f"image folder {root} holds no {'/'.join(EXTENSIONS)} files.")
        return ImageFolder(root, tuple(paths), None, None)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [_images_under(root / name) for name in classes]
    kept = [(name, paths) for name, paths in zip(classes, per_class, strict=True) if paths]
    if not kept:
        raise InputError(
            f"image folder {root} has no subfolder with {'/'.join(EXTENSIONS)} files; with "
            "data.class_conditional = true each class is a subfolder of it."
        )
    paths = tuple(p for _, class_paths in kept for p in class_paths)
    labels = tuple(k for k, (_, class_paths) in enumerate(kept) for _ in class_paths)
    return ImageFolder(root, paths, labels, tuple(name for name, _ in kept))
