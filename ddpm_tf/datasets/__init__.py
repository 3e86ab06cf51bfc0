"""Where training images come from: embedded and offline tfds datasets, folders, pixel caches.

Importing this package registers the embedded tfds builders ``sklearn_digits`` and ``mnist5k``
(:mod:`ddpm_tf.datasets.embedded`), whose data ships inside installed wheels; ``ddpm_tf.data``
imports it for that reason. :mod:`ddpm_tf.datasets.preparation` prepares tfds' own ``mnist`` /
``fashion_mnist`` from local idx files and holds :func:`prepare`, the dispatcher behind
``ddpm-prepare``. :mod:`ddpm_tf.datasets.image_folder` reads a folder of the user's PNG/JPEG
files, and :mod:`ddpm_tf.datasets.pixel_cache` keeps any split decoded on disk, read by index as
training goes.
"""

from __future__ import annotations

from ddpm_tf.datasets.embedded import (
    EMBEDDED_DATASETS,
    Mnist5k,
    SklearnDigits,
    prepare_embedded,
    split_indices,
)
from ddpm_tf.datasets.image_folder import ImageFolder, UnreadableImageError, scan_folder
from ddpm_tf.datasets.pixel_cache import CorruptCacheError, PixelCache
from ddpm_tf.datasets.preparation import (
    IDX_DATASETS,
    IdxFormatError,
    default_idx_source,
    prepare,
    prepare_from_idx,
)

__all__ = [
    "EMBEDDED_DATASETS",
    "IDX_DATASETS",
    "CorruptCacheError",
    "IdxFormatError",
    "ImageFolder",
    "Mnist5k",
    "PixelCache",
    "SklearnDigits",
    "UnreadableImageError",
    "default_idx_source",
    "prepare",
    "prepare_embedded",
    "prepare_from_idx",
    "scan_folder",
    "split_indices",
]
