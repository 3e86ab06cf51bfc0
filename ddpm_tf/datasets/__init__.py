"""Datasets that need no network: two embedded tfds builders and offline MNIST-style preparation.

Importing this package registers the embedded tfds builders ``sklearn_digits`` and ``mnist5k``
(:mod:`ddpm_tf.datasets.embedded`), whose data ships inside installed wheels; ``ddpm_tf.data``
imports it for that reason. :mod:`ddpm_tf.datasets.preparation` prepares tfds' own ``mnist`` /
``fashion_mnist`` from local idx files and holds :func:`prepare`, the dispatcher behind
``ddpm-prepare``.
"""

from __future__ import annotations

from ddpm_tf.datasets.embedded import (
    EMBEDDED_DATASETS,
    Mnist5k,
    SklearnDigits,
    prepare_embedded,
    split_indices,
)
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
    "IdxFormatError",
    "Mnist5k",
    "SklearnDigits",
    "default_idx_source",
    "prepare",
    "prepare_embedded",
    "prepare_from_idx",
    "split_indices",
]
