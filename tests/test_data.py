"""Tests for ddpm_tf.data: offline only (tfds mocks or small datasets prepared in tmp dirs)."""

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import run_script

from ddpm_tf.data import (
    DatasetNotPreparedError,
    distribute,
    load_images,
    num_classes,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_RAMP = 12


def ramp_images() -> np.ndarray:
    """[NUM_RAMP, 16, 16, 1] uint8: example i holds (0..255 + i) mod 256, row-major.

    Every pixel value occurs, and rows increase left to right, so flips are visible.
    """
    base = np.arange(256).reshape(16, 16, 1)
    return np.stack([(base + i) % 256 for i in range(NUM_RAMP)]).astype(np.uint8)


def crop_images() -> np.ndarray:
    """[4, 6, 10, 3] uint8: black central 6x6 square, white 2-pixel bands left and right."""
    images = np.full((4, 6, 10, 3), 255, np.uint8)
    images[:, :, 2:8, :] = 0
    return images


def store(data_dir: Path, name: str, features: dict, examples: dict) -> None:
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version="1.0.0",
        features=tfds.features.FeaturesDict(features),
        split_datasets={"train": tf.data.Dataset.from_tensor_slices(examples)},
        data_dir=data_dir,
        disable_shuffling=True,
    )


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tfds data_dir holding small datasets prepared from in-memory arrays."""
    data_dir = tmp_path_factory.mktemp("tfds")
    store(
        data_dir,
        "ramp",
        {
            "image": tfds.features.Image(shape=(16, 16, 1)),
            "label": tfds.features.ClassLabel(num_classes=3),
        },
        {"image": ramp_images(), "label": np.arange(NUM_RAMP) % 3},
    )
    store(
        data_dir,
        "float_images",
        {"image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.float32)},
        {"image": np.zeros((4, 4, 4, 1), np.float32)},
    )
    store(
        data_dir,
        "wide",
        {"image": tfds.features.Image(shape=(6, 10, 3))},
        {"image": crop_images()},
    )
    return data_dir


def collect(ds: tf.data.Dataset) -> list:
    return list(ds.as_numpy_iterator())


def stack_images(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = collect(ds)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# --- scaling helpers ---------------------------------------------------------------------


# --- pipelines on mocked tfds datasets -----------------------------------------------------


def mocked(num_examples: int):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_mnist_batches_shape_dtype_range():
    with mocked(10):
        batches = collect(load_images("mnist", "train", batch_size=4, download=True))
    assert len(batches) == 2  # 10 examples, remainder of 2 dropped
    for images in batches:
        assert images.shape == (4, 28, 28, 1)
        assert images.dtype == np.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
    assert np.unique(batches[0]).size > 2  # real pixel data, not a constant


def test_keep_remainder_when_asked():
    with mocked(10):
        ds = load_images("mnist", batch_size=4, download=True, drop_remainder=False)
        sizes = [b.shape[0] for b in collect(ds)]
    assert sizes == [4, 4, 2]


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_labels_are_int32(name, shape):
    with mocked(8):
        ds = load_images(name, "test", batch_size=4, download=True, label_key="label")
        batches = collect(ds)
    assert ds.element_spec[1].dtype == tf.int32
    assert len(batches) == 2
    for images, labels in batches:
        assert images.shape == (4, *shape) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 10


def test_variable_size_images_need_image_size():
    with mocked(6):
        with pytest.raises(ValueError, match="image_size"):
            load_images("tf_flowers", batch_size=2, download=True)
        batches = collect(load_images("tf_flowers", batch_size=2, download=True, image_size=8))
    assert [b.shape for b in batches] == [(2, 8, 8, 3)] * 3
    assert all(b.min() >= -1.0 and b.max() <= 1.0 for b in batches)


# --- pipelines on prepared local datasets -------------------------------------------------


def test_pixels_scaled_exactly_and_labels_aligned(prepared_dir):
    ds = load_images(
        "ramp", data_dir=str(prepared_dir), batch_size=4, label_key="label", shuffle_buffer=0
    )
    images, labels = stack_images(ds)
    expected = ramp_images().astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(images, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, np.arange(NUM_RAMP) % 3)


def test_shuffle_is_seeded(prepared_dir):
    def images(seed):
        ds = load_images("ramp", data_dir=str(prepared_dir), batch_size=12, seed=seed)
        return collect(ds)[0]

    first, again, other = images(1), images(1), images(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.allclose(first, ramp_images() / 127.5 - 1.0)  # order actually shuffled


def test_random_flip_is_reproducible_and_flips(prepared_dir):
    def build(flip: bool, seed: int = 7) -> tf.data.Dataset:
        return load_images(
            "ramp",
            data_dir=str(prepared_dir),
            batch_size=4,
            label_key="label",
            random_flip=flip,
            seed=seed,
        )

    flipped, flipped_labels = stack_images(build(True))
    again, _ = stack_images(build(True))
    plain, plain_labels = stack_images(build(False))
    np.testing.assert_array_equal(flipped, again)
    np.testing.assert_array_equal(flipped_labels, plain_labels)  # same shuffle order

    is_flipped = [
        np.array_equal(f, np.flip(p, axis=1)) for f, p in zip(flipped, plain, strict=True)
    ]
    is_same = [np.array_equal(f, p) for f, p in zip(flipped, plain, strict=True)]
    # each output image is exactly one of: the plain image or its mirror
    assert all(a != b for a, b in zip(is_flipped, is_same, strict=True))
    assert 0 < sum(is_flipped) < NUM_RAMP

    other, _ = stack_images(build(True, seed=8))
    assert not np.array_equal(flipped, other)


def test_random_flip_differs_between_epochs(prepared_dir):
    ds = load_images(
        "ramp", data_dir=str(prepared_dir), batch_size=4, random_flip=True, shuffle_buffer=0
    )
    first, second = np.concatenate(collect(ds)), np.concatenate(collect(ds))
    assert not np.array_equal(first, second)


def test_repeat_keeps_yielding(prepared_dir):
    ds = load_images("ramp", data_dir=str(prepared_dir), batch_size=5, repeat=True)
    assert len(collect(ds.take(7))) == 7  # 35 examples from a 12-example split


def test_resize_and_center_crop(prepared_dir):
    def images(center_crop: bool) -> np.ndarray:
        ds = load_images(
            "wide",
            data_dir=str(prepared_dir),
            batch_size=2,
            image_size=3,
            center_crop=center_crop,
            cache=False,
        )
        return np.concatenate(collect(ds))

    cropped, squashed = images(True), images(False)
    assert cropped.shape == squashed.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(cropped, -1.0)  # only the black centre survives the crop
    assert squashed.max() > -1.0  # without the crop the white bands leak in


def test_file_cache(prepared_dir, tmp_path):
    cache_file = tmp_path / "cache"
    ds = load_images("ramp", data_dir=str(prepared_dir), batch_size=4, cache=str(cache_file))
    assert len(collect(ds)) == 3
    assert any(p.name.startswith("cache") for p in tmp_path.iterdir())


# --- failures -------------------------------------------------------------------------------


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError) as info:
        load_images("mnist", data_dir=str(tmp_path), batch_size=4)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "'mnist'" in message
    assert str(tmp_path) in message
    assert "download=True" in message


def test_missing_version_lists_what_is_on_disk(tmp_path):
    (tmp_path / "mnist" / "1.0.0").mkdir(parents=True)
    with pytest.raises(DatasetNotPreparedError, match=r"1\.0\.0"):
        load_images("mnist", data_dir=str(tmp_path), batch_size=4)


def test_unknown_dataset_suggests_close_names(tmp_path):
    with pytest.raises(ValueError, match=r"name='mnits'.*mnist"):
        load_images("mnits", data_dir=str(tmp_path), batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -2}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8.0}, "image_size"),
        ({"split": ""}, "split"),
        ({"split": None}, "split"),
        ({"shuffle_buffer": -1}, "shuffle_buffer"),
        ({"resize_method": "cubic"}, "resize_method"),
        ({"seed": "1"}, "seed"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, arg, tmp_path):
    args = {"name": "mnist", "batch_size": 4, "data_dir": str(tmp_path), **kwargs}
    with pytest.raises(ValueError, match=arg):
        load_images(**args)


def test_missing_image_key_lists_features(prepared_dir):
    with pytest.raises(ValueError, match=r"image_key='img'.*\['image', 'label'\]"):
        load_images("ramp", data_dir=str(prepared_dir), batch_size=4, image_key="img")


def test_missing_label_key_lists_features(prepared_dir):
    with pytest.raises(ValueError, match=r"label_key='class'.*\['image', 'label'\]"):
        load_images("ramp", data_dir=str(prepared_dir), batch_size=4, label_key="class")


def test_float_images_rejected(prepared_dir):
    with pytest.raises(ValueError, match=r"uint8.*float32"):
        load_images("float_images", data_dir=str(prepared_dir), batch_size=2)


def test_non_scalar_label_rejected(prepared_dir):
    with pytest.raises(ValueError, match="label_key='image'"):
        load_images("ramp", data_dir=str(prepared_dir), batch_size=2, label_key="image")


def test_num_classes(prepared_dir):
    assert num_classes("mnist") == 10  # from the builder's code, no data needed
    assert num_classes("ramp", data_dir=str(prepared_dir)) == 3
    with pytest.raises(ValueError, match="ClassLabel"):
        num_classes("ramp", label_key="image", data_dir=str(prepared_dir))


# --- distribution ---------------------------------------------------------------------------

DISTRIBUTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from ddpm_tf.data import distribute, load_images

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ds = load_images("ramp", data_dir=sys.argv[1], batch_size=4, label_key="label")
    shapes = []
    for images, labels in distribute(ds, strategy):
        shapes.append([
            [list(t.shape) for t in strategy.experimental_local_results(images)],
            [list(t.shape) for t in strategy.experimental_local_results(labels)],
        ])
    try:
        distribute(load_images("ramp", data_dir=sys.argv[1], batch_size=3), strategy)
        error = None
    except ValueError as err:
        error = str(err)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "shapes": shapes,
                      "error": error}))
    """
)


def test_distribute_splits_global_batch_over_two_replicas(prepared_dir):
    result = run_script(
        DISTRIBUTE_SCRIPT, str(prepared_dir), env={"PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT
    )
    assert result["replicas"] == 2
    per_replica = [[[2, 16, 16, 1], [2, 16, 16, 1]], [[2], [2]]]
    assert result["shapes"] == [per_replica] * 3  # 12 examples / global batch 4
    assert "not divisible" in result["error"]


def test_distribute_default_strategy_passes_batches_through(prepared_dir):
    ds = load_images("ramp", data_dir=str(prepared_dir), batch_size=4)
    batches = list(distribute(ds, tf.distribute.get_strategy()))
    assert [tuple(b.shape) for b in batches] == [(4, 16, 16, 1)] * 3
