"""Tests for ddpm_tf.classifier and the ddpm-classifier command (offline; tiny synthetic data)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ddpm_tf.classifier import ImageClassifier, num_stages, train_classifier
from ddpm_tf.pixels import scale_to_unit
from ddpm_tf.training.ddpm_classifier import main


def quadrant_images(n: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, size, size, 1] noise images with a bright square in the quadrant of the label.

    Four classes, separable by where the square is (not by overall brightness).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 90, (n, size, size, 1))
    half = size // 2
    for image, label in zip(images, labels, strict=True):
        row, col = divmod(int(label), 2)
        image[row * half : (row + 1) * half, col * half : (col + 1) * half] += 150
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def trained() -> tuple[ImageClassifier, dict]:
    x, y = quadrant_images(600, seed=0)
    vx, vy = quadrant_images(200, seed=1)
    return train_classifier(x, y, 4, epochs=4, batch_size=32, seed=3, val=(vx, vy))


def test_trains_to_high_accuracy(trained):
    model, metrics = trained
    assert metrics["val_accuracy"] >= 0.95, metrics
    assert metrics["num_train"] == 600 and metrics["num_val"] == 200 and metrics["epochs"] == 4
    # The reported accuracy is the model's: recompute it from the logits.
    vx, vy = quadrant_images(200, seed=1)
    predicted = np.argmax(model(scale_to_unit(vx)).numpy(), axis=-1)
    assert np.mean(predicted == vy) == pytest.approx(metrics["val_accuracy"])
    json.dumps(metrics)


def test_keras_round_trip(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ImageClassifier)
    assert loaded.get_config() == model.get_config()
    x = scale_to_unit(quadrant_images(5, seed=2)[0])
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(loaded.features(x).numpy(), model.features(x).numpy())
    assert loaded.get_layer("features").units == 128


def test_training_is_reproducible():
    x, y = quadrant_images(64, seed=0)
    a, _ = train_classifier(x, y, 4, epochs=1, batch_size=16, seed=7)
    b, _ = train_classifier(x, y, 4, epochs=1, batch_size=16, seed=7)
    c, _ = train_classifier(x, y, 4, epochs=1, batch_size=16, seed=8)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(
        not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights(), strict=True)
    )


@pytest.mark.parametrize(
    "shape, stages", [((8, 8, 1), 1), ((28, 28, 1), 2), ((32, 32, 3), 3), ((4, 4, 1), 0)]
)
def test_dataset_shapes(shape, stages):
    assert num_stages(shape[0]) == stages
    model = ImageClassifier(shape, 10, width=8, feature_dim=16)
    x = tf.zeros((2, *shape))
    assert model(x).shape == (2, 10)
    assert model.features(x).shape == (2, 16)
    assert len(model.convs) == 2 * max(stages, 1)


def test_bad_input():
    x, y = quadrant_images(8, seed=0)
    with pytest.raises(ValueError, match="training images must be uint8"):
        train_classifier(x.astype(np.float32), y, 4, epochs=1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes=3\)"):
        train_classifier(x, y + 3, 3, epochs=1)
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        train_classifier(x, y[:4], 4, epochs=1)
    with pytest.raises(ValueError, match="val images have shape"):
        train_classifier(x, y, 4, epochs=1, val=(quadrant_images(4, 0, size=16)[0], y[:4]))
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        train_classifier(x, y, 4, epochs=0)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ImageClassifier((8, 8, 1), 1)
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\)"):
        ImageClassifier((8, 8), 4)


def store_quadrants(data_dir, name: str) -> None:
    """A prepared tfds dataset ``name`` with train (600) and test (200) quadrant images."""
    splits = {}
    for split, n, seed in (("train", 600, 0), ("test", 200, 1)):
        images, labels = quadrant_images(n, seed)
        splits[split] = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version="1.0.0",
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=4),
            }
        ),
        split_datasets=splits,
        data_dir=data_dir,
        disable_shuffling=True,
    )


def test_command_trains_and_saves(tmp_path, capsys):
    store_quadrants(tmp_path / "data", "quadrants")
    out = tmp_path / "run" / "quadrants.keras"
    argv = ["--dataset", "quadrants", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    assert main([*argv, "--epochs", "4", "--batch-size", "32"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["test_accuracy"] >= 0.95 and report["num_val"] == 200
    assert report["num_train"] == 600 and report["num_classes"] == 4
    assert report["image_shape"] == [8, 8, 1]
    loaded = keras.models.load_model(out)
    vx, vy = quadrant_images(200, seed=1)
    predicted = np.argmax(loaded(scale_to_unit(vx)).numpy(), axis=-1)
    assert np.mean(predicted == vy) == pytest.approx(report["test_accuracy"])
    assert "test accuracy" in capsys.readouterr().out


def test_command_does_not_download(tmp_path, capsys):
    out = tmp_path / "m.keras"
    rc = main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'mnist' is not prepared" in err and "download" in err
    assert not out.exists() and not (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").exists()


def test_command_bad_arguments(tmp_path, capsys):
    assert main(["--dataset", "mnist", "--out", str(tmp_path / "m.h5")]) == 2
    assert "--out must end with .keras" in capsys.readouterr().err
    assert main(["--dataset", "mnist", "--epochs", "0", "--out", str(tmp_path / "m.keras")]) == 2
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
    rc = main(["--dataset", "no_such_dataset_xyz", "--out", str(tmp_path / "m.keras")])
    assert rc == 2 and "not a known tfds dataset" in capsys.readouterr().err
