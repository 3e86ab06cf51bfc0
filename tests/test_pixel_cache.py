"""Pixel caches and image folders: what is written is what is read, by index, in any order."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ddpm_tf.data import step_batches
from ddpm_tf.datasets.image_folder import UnreadableImageError, scan_folder
from ddpm_tf.datasets.pixel_cache import CorruptCacheError, PixelCache


def _examples(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 6, 5, 3), dtype=np.uint8), rng.integers(0, 4, 37)


def test_rows_read_back_exactly_in_any_order(tmp_path, arrays):
    images, labels = arrays
    seen = []
    cache = PixelCache.build(
        tmp_path / "c",
        _examples(images, labels),
        num_classes=4,
        source={"k": 1},
        progress=seen.append,
        batch_size=8,
    )
    assert (len(cache), cache.shape, cache.num_classes) == (37, (6, 5, 3), 4)
    assert seen == [8, 16, 24, 32, 37]
    rows = np.array([36, 0, 5, 5, 17])
    np.testing.assert_array_equal(cache.read(rows), images[rows])
    np.testing.assert_array_equal(cache.labels, labels)
    np.testing.assert_array_equal(cache.head(4), images[:4])
    np.testing.assert_array_equal(cache.load(), images)
    assert (tmp_path / "c" / "pixels.u8").stat().st_size == images.nbytes
    with pytest.raises(IndexError, match=r"\[0, 37\)"):
        cache.read(np.array([37]))


def test_reuse_needs_a_finished_build_from_the_same_source(tmp_path, arrays):
    images, labels = arrays
    PixelCache.build(tmp_path / "c", _examples(images, labels), num_classes=None, source={"k": 1})
    assert PixelCache.reuse(tmp_path / "c", {"k": 1}) is not None
    assert PixelCache.reuse(tmp_path / "c", {"k": 2}) is None
    (tmp_path / "c" / "meta.json").unlink()  # as if the build had been killed before its end
    assert PixelCache.reuse(tmp_path / "c", {"k": 1}) is None


def test_a_truncated_cache_is_refused_with_the_fix(tmp_path, arrays):
    images, labels = arrays
    PixelCache.build(tmp_path / "c", _examples(images, labels), num_classes=None, source={})
    with open(tmp_path / "c" / "pixels.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptCacheError, match="delete .* and it is built again"):
        PixelCache(tmp_path / "c")
    meta = tmp_path / "c" / "meta.json"
    meta.write_text(json.dumps({"count": "many"}))
    with pytest.raises(CorruptCacheError, match="not a valid pixel cache"):
        PixelCache(tmp_path / "c")


def test_an_interrupted_build_leaves_nothing(tmp_path):
    def broken():
        yield np.zeros((2, 2, 1), np.uint8), np.int32(0)
        raise RuntimeError("source failed")

    examples = tf.data.Dataset.from_generator(
        broken,
        output_signature=(
            tf.TensorSpec([2, 2, 1], tf.uint8),
            tf.TensorSpec([], tf.int32),
        ),
    )
    with pytest.raises(Exception, match="source failed"):
        PixelCache.build(tmp_path / "c", examples, num_classes=None, source={}, batch_size=1)
    assert not (tmp_path / "c").exists()


def test_step_batches_from_disk_equal_those_from_memory(tmp_path, arrays):
    images, labels = arrays
    cache = PixelCache.build(tmp_path / "c", _examples(images, labels), num_classes=4, source={})
    options = dict(batch_size=8, seed=3, start_step=2, random_flip=True)
    memory = step_batches(images, labels, **options)
    disk = step_batches(cache, cache.labels, **options)
    for (x_memory, y_memory), (x_disk, y_disk) in zip(memory.take(12), disk.take(12), strict=True):
        np.testing.assert_array_equal(x_memory.numpy(), x_disk.numpy())
        np.testing.assert_array_equal(y_memory.numpy(), y_disk.numpy())


def test_reading_does_not_grow_memory_with_the_file(tmp_path):
    """Reading a 256 MB cache by random rows keeps the reader's RSS far below the file's size."""
    script = f"""
import resource, numpy as np
from ddpm_tf.datasets.pixel_cache import PixelCache
import tensorflow as tf
rows, shape = 65536, (64, 64, 1)
path = {str(tmp_path / "big")!r}
ds = tf.data.Dataset.range(rows).map(lambda i: (tf.fill(shape, tf.cast(i % 251, tf.uint8)), 0))
cache = PixelCache.build(path, ds.map(lambda x, y: (x, tf.cast(y, tf.int32))), num_classes=None,
                         source={{}}, batch_size=1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
order = np.random.default_rng(0).permutation(rows)
for start in range(0, rows, 512):
    batch = cache.read(order[start:start + 512])
    assert (batch[:, 0, 0, 0] == order[start:start + 512] % 251).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    grown_kb = int(done.stdout.split()[-1])
    assert grown_kb < 32 * 1024, f"reading 256 MB grew the RSS by {grown_kb} kB"


# ------------------------------------------------------------------------------- image folders
def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two classes of solid-colour images of various sizes and formats, one in a nested folder."""
    root = tmp_path / "images"
    _save(root / "cats" / "a.png", np.full((40, 60, 3), 200, np.uint8))
    _save(root / "cats" / "deep" / "b.JPG", np.full((30, 30, 3), 50, np.uint8))
    _save(root / "dogs" / "c.png", np.full((20, 10), 120, np.uint8))  # gray
    _save(root / "dogs" / "d.jpeg", np.full((16, 16, 3), 10, np.uint8))
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def test_scan_finds_images_recursively_with_subfolders_as_classes(folder):
    found = scan_folder(folder, class_conditional=True)
    names = [p.split("images/")[1] for p in found.paths]
    assert names == ["cats/a.png", "cats/deep/b.JPG", "dogs/c.png", "dogs/d.jpeg"]
    assert found.labels == (0, 0, 1, 1) and found.class_names == ("cats", "dogs")
    assert scan_folder(folder).labels is None


def test_decoding_center_crops_resizes_and_sets_channels(folder):
    found = scan_folder(folder, class_conditional=True)
    rgb = [x.numpy() for x, _ in found.examples(8, 3)]
    assert all(x.shape == (8, 8, 3) and x.dtype == np.uint8 for x in rgb)
    assert [int(x.mean().round()) for x in rgb] == [200, 50, 120, 10]  # JPEG keeps solid colours
    gray = [x.numpy() for x, _ in found.examples(8, 1)]
    assert all(x.shape == (8, 8, 1) for x in gray)


def test_cropping_keeps_the_central_square(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # only the central 10x10 square is white
    _save(tmp_path / "f" / "wide.png", wide)
    ((image, _),) = scan_folder(tmp_path / "f").examples(10, 3).as_numpy_iterator()
    assert image.min() == 255


def test_holdout_is_fixed_and_disjoint(tmp_path):
    for i in range(45):
        _save(tmp_path / "f" / f"{i:02d}.png", np.full((4, 4, 3), i, np.uint8))
    found = scan_folder(tmp_path / "f")
    train, test = found.holdout()
    assert (len(train), len(test)) == (43, 2)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(45))
    again = scan_folder(tmp_path / "f").holdout()
    np.testing.assert_array_equal(again[1], test)
    train_cache, test_cache = found.cache(tmp_path / "cache", 4, 3)
    np.testing.assert_array_equal(test_cache.load()[:, 0, 0, 0], test)  # file i has value i


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_an_unreadable_file_is_named_and_nothing_is_left(tmp_path, damage):
    root = tmp_path / "f"
    for i in range(30):
        _save(root / f"{i:02d}.jpg", np.full((12, 12, 3), 7 * i, np.uint8))
    bad = root / "17.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello")
    with pytest.raises(UnreadableImageError, match=r"17\.jpg cannot be decoded"):
        scan_folder(root).cache(tmp_path / "cache", 8, 3)
    assert not any((tmp_path / "cache").rglob("meta.json"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "holds no"),
        (lambda root: root.write_text("x"), "is not a folder"),
    ],
)
def test_missing_empty_or_file_is_a_clear_error(tmp_path, make, message):
    root = tmp_path / "f"
    make(root)
    with pytest.raises(ValueError, match=message):
        scan_folder(root)


def test_classes_need_subfolders(tmp_path):
    _save(tmp_path / "f" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="no subfolder"):
        scan_folder(tmp_path / "f", class_conditional=True)
