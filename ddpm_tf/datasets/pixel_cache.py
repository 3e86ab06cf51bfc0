"""Decoded pixels of one split on disk, read back by example index: the training input at any scale.

A split is decoded once (a tfds dataset, or a folder of PNG/JPEG files) into a file of fixed-size
uint8 rows, [N, H, W, C] in C order, beside its int32 labels and a small JSON description::

    <directory>/pixels.u8      N * H * W * C bytes, example i at byte i * H * W * C
    <directory>/labels.npy     int32 [N] (absent for unlabelled data)
    <directory>/meta.json      {"count": N, "shape": [H, W, C], "num_classes": K or null, ...}

Why this layout rather than TFRecord shards read through an interleave and a shuffle buffer: a fixed
row size gives random access by index, so the training stream can take example
`perm_epoch(i)` for any i (`data.step_batches`), a pure function of (seed, step) with a uniform
shuffle over the whole split. Resuming at step s costs nothing (no records are read to skip, no
iterator or shuffle buffer is saved in checkpoints) and several workers each read exactly their
rows of a global batch. Rows are read with `os.pread`, which goes through the page cache and does
not grow the process's memory, whatever the size of the split. Decoding happens once, so later
epochs and resumed runs never decode a JPEG again. The cost is disk: N * H * W * C bytes (200,000
images of 64x64 RGB take 2.5 GB).

A cache is built in `<directory>.partial` and renamed to `directory` once complete
(`ddpm_tf.files.replace_directory`), so `directory` holds a complete cache or none: a build that
fails (a full disk: `WriteError`, naming the cache and the OS reason) or is killed leaves the
previous cache as it was, and its partial files are removed (or replaced by the next build). A
directory without `meta.json` (left by an older layout) is an unfinished build and is built again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ddpm_tf.errors import InputError
from ddpm_tf.files import partial_sibling, replace_directory, writing

__all__ = ["CorruptCacheError", "PixelCache"]

PIXELS, LABELS, META = "pixels.u8", "labels.npy", "meta.json"
FORMAT = 1


class CorruptCacheError(InputError):
    """The files of a pixel cache do not agree with its description."""


class PixelCache:
    """A split's uint8 images [N, H, W, C] (and int32 labels [N]) on disk, read by index.

    Open a finished cache with `PixelCache(directory)`; make one with `PixelCache.build`.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory} holds no finished pixel cache ({META}).")
        try:
            meta = json.loads(meta_path.read_text())
            self.count = int(meta["count"])
            self.shape = tuple(int(d) for d in meta["shape"])
            self.num_classes = meta["num_classes"]
            self.source = meta.get("source", {})
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptCacheError(
                f"{meta_path} is not a valid pixel cache description ({err}); delete "
                f"{self.directory} and it is built again."
            ) from err
        self.row_bytes = int(np.prod(self.shape))
        size = (
            (self.directory / PIXELS).stat().st_size if (self.directory / PIXELS).exists() else -1
        )
        if size != self.count * self.row_bytes:
            raise CorruptCacheError(
                f"{self.directory / PIXELS} has {size} bytes where {self.count} images of "
                f"{self.shape} need {self.count * self.row_bytes}; delete {self.directory} and it "
                "is built again."
            )
        self.labels = None
        if self.num_classes is not None:
            self.labels = np.load(self.directory / LABELS).astype(np.int32)
            if self.labels.shape != (self.count,):
                raise CorruptCacheError(
                    f"{self.directory / LABELS} holds {self.labels.shape} labels for "
                    f"{self.count} images; delete {self.directory} and it is built again."
                )
        self._fd = os.open(self.directory / PIXELS, os.O_RDONLY)  # pread is safe from any thread

    def __len__(self) -> int:
        return self.count

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 images [len(rows), H, W, C] of the examples `rows` (int, any order, repeats allowed)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"rows must be in [0, {self.count}), got {rows.min()}..{rows.max()}")
        size = self.row_bytes
        data = b"".join(os.pread(self._fd, size, int(r) * size) for r in rows)
        return np.frombuffer(data, np.uint8).reshape(rows.size, *self.shape)

    def head(self, count: int) -> np.ndarray:
        """The first `count` images (all if fewer), in one read."""
        count = min(count, self.count)
        with open(self.directory / PIXELS, "rb") as f:
            data = f.read(count * self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(count, *self.shape)

    def load(self) -> np.ndarray:
        """All images in memory, uint8 [N, H, W, C]."""
        return self.head(self.count)

    def gather(self, rows: tf.Tensor) -> tf.Tensor:
        """The graph op of `read`, for tf.data: int64 rows [B] -> uint8 [B, H, W, C]."""
        images = tf.numpy_function(self.read, [rows], tf.uint8, stateful=False)
        images.set_shape([rows.shape[0], *self.shape])
        return images

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @classmethod
    def build(
        cls,
        directory: str | os.PathLike,
        examples: tf.data.Dataset,
        *,
        num_classes: int | None,
        source: dict[str, Any],
        progress: Callable[[int], None] | None = None,
        batch_size: int = 256,
    ) -> PixelCache:
        """Writes (uint8 image [H, W, C], int32 label) pairs in order, then opens the cache.

        Memory stays at a few batches whatever the split's size. `source` describes where the
        pixels came from (kept in meta.json); `progress` is called with the images written so far.
        The cache in `directory`, if any, is replaced once the new one is complete (see above).
        """
        directory = Path(directory)
        if directory.exists() and not (directory / META).is_file():
            shutil.rmtree(directory)  # an unfinished build of an older layout
        staging = partial_sibling(directory)
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed build
        removed = lambda: shutil.rmtree(staging, ignore_errors=True)  # noqa: E731
        with writing("pixel cache", directory, on_error=removed):  # nothing is left behind
            staging.mkdir(parents=True)
            count, shape, labels = _write_rows(staging / PIXELS, examples, batch_size, progress)
            if count == 0:
                raise InputError(f"no images to cache in {directory}: the source is empty.")
            if num_classes is not None:
                np.save(staging / LABELS, labels)
            meta = {
                "format": FORMAT,
                "count": count,
                "shape": [int(d) for d in shape],
                "num_classes": num_classes,
                "source": source,
            }
            (staging / META).write_text(json.dumps(meta, indent=2))
            replace_directory(staging, directory)
        return cls(directory)

    @classmethod
    def reuse(cls, directory: str | os.PathLike, source: dict[str, Any]) -> PixelCache | None:
        """The finished cache in `directory` if it was built from `source`, else None."""
        if not (Path(directory) / META).is_file():
            return None
        cache = cls(directory)
        return cache if cache.source == json.loads(json.dumps(source)) else None


def _write_rows(path: Path, examples: tf.data.Dataset, batch_size: int, progress) -> tuple:
    """Appends the examples' images to `path`; (count, image shape, int32 labels [count])."""
    shape, count, labels = None, 0, []
    with open(path, "wb") as out:
        for images, batch_labels in examples.batch(batch_size).as_numpy_iterator():
            shape = shape or images.shape[1:]
            out.write(np.ascontiguousarray(images, np.uint8).tobytes())
            labels.append(batch_labels.astype(np.int32))
            count += len(images)
            if progress is not None:
                progress(count)
    return count, shape, np.concatenate(labels) if labels else np.zeros([0], np.int32)
