"""Offline preparation: tfds' own ``mnist`` / ``fashion_mnist`` from local idx files, and
:func:`prepare`, which dispatches to it or to the embedded datasets.

:func:`prepare_from_idx` prepares tfds' official builders from local idx files (e.g. Debian's
``dataset-fashion-mnist`` package), after which ``tfds.load(name, data_dir=..., download=False)``
works offline. It feeds the files to the builder through
:class:`ddpm_tf.compat.LocalFilesDownloadManager`, which never touches the network.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tensorflow_datasets as tfds

from ddpm_tf.compat import LocalFilesDownloadManager, use_download_manager
from ddpm_tf.datasets.embedded import (
    _NUM_CLASSES,
    EMBEDDED_DATASETS,
    _check_data_dir,
    _check_overwrite,
    _download_config,
    prepare_embedded,
)
from ddpm_tf.errors import InputError, InputTypeError

__all__ = [
    "IDX_DATASETS",
    "IdxFormatError",
    "default_idx_source",
    "prepare",
    "prepare_from_idx",
]

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


class IdxFormatError(InputError):
    """An idx file is unreadable or does not have the expected header, counts or size."""


def default_idx_source(name: str) -> Path | None:
    """The directory where a system package installs ``name``'s idx files, if there is one."""
    _check_idx_name(name)
    return _DEFAULT_SOURCES[name]


def _check_idx_name(name: object) -> None:
    if name not in IDX_DATASETS:
        raise InputError(
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
        raise InputTypeError(f"source_dir must be a non-empty str or path, got {source_dir!r}")
    data_dir = _check_data_dir(data_dir)
    files = _find_idx_files(name, Path(source_dir).expanduser())
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    _check_overwrite(builder, overwrite)
    for key, path in files.items():
        _check_idx_header(key, path)

    with tempfile.TemporaryDirectory(prefix=f"{name}-idx-") as tmp:
        staging = Path(tmp)
        # Labels first: they are small, so a bad label fails before images are decompressed.
        order = sorted(files, key=lambda key: key.endswith("data"))
        local = {key: _stage_idx_file(key, files[key], staging) for key in order}
        manager = LocalFilesDownloadManager(
            local,
            source_bytes=sum(p.stat().st_size for p in files.values()),
            download_dir=staging / "downloads",
            dataset_name=name,
        )
        with use_download_manager(builder, manager):
            builder.download_and_prepare(download_config=_download_config(overwrite))
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
            raise InputError(
                f"dataset {name!r} is embedded and takes no source_dir, got {source_dir!r}"
            )
        return prepare_embedded(name, data_dir, overwrite=overwrite)
    if name not in IDX_DATASETS:
        known = sorted([*EMBEDDED_DATASETS, *IDX_DATASETS])
        raise InputError(f"name={name!r} cannot be prepared offline; choose one of {known}")
    source_dir = source_dir if source_dir is not None else default_idx_source(name)
    if source_dir is None:
        raise InputError(
            f"dataset {name!r} has no default source directory; pass source_dir (--source) "
            f"holding its four idx files ({_SOURCE_HINTS[name]})"
        )
    return prepare_from_idx(name, source_dir, data_dir, overwrite=overwrite)
