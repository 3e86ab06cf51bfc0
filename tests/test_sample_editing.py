"""ddpm-sample's editing modes on a small model saved as .keras: image files in, grids and arrays
out, one-line errors for inputs that do not fit."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import GaussianDiffusion, get_beta_schedule, unet
from ddpm_tf.model import DiffusionModel
from ddpm_tf.training.ddpm_sample import main

FAST = ["--method", "ddim", "--steps", "4", "--seed", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("editing")
    keras.utils.set_random_seed(0)
    net = unet.from_preset("tiny_8", ch=16, num_groups=4)
    model = DiffusionModel(net, GaussianDiffusion(get_beta_schedule("linear", 50)))
    model.save(root / "model.keras")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate((8, 8, 16)):  # the 16x16 one is resized to the model's 8x8
        pixels = rng.integers(0, 256, (size, size, 1), dtype=np.uint8)
        (photos / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    mask = np.zeros((8, 8, 1), np.uint8)
    mask[:4] = 255  # the top half is kept
    (root / "mask.png").write_bytes(tf.io.encode_png(mask).numpy())
    return root


def _run(files, out, *flags) -> int:
    return main([str(files / "model.keras"), "--out", str(out), *FAST, *flags])


def test_inpainting_keeps_the_masked_pixels_and_shows_input_mask_result(files, tmp_path):
    flags = ["--init-images", str(files / "photos"), "--mask", str(files / "mask.png")]
    assert _run(files, tmp_path, *flags, "--resample", "2", "--jump", "2") == 0
    data = np.load(tmp_path / "inpainted.npz")
    assert data["images"].shape == data["inputs"].shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(data["images"][:, :4], data["inputs"][:, :4])
    assert json.loads(str(data["settings"]))["mode"] == "inpaint"
    assert (tmp_path / "inpainted.png").is_file()


def test_img2img_inversion_and_interpolation_write_their_outputs(files, tmp_path):
    photos = str(files / "photos")
    assert _run(files, tmp_path / "a", "--init-images", photos, "--strength", "0.5") == 0
    assert np.load(tmp_path / "a" / "edited.npz")["images"].shape == (3, 8, 8, 1)
    assert _run(files, tmp_path / "b", "--init-images", photos, "--invert") == 0
    latents = np.load(tmp_path / "b" / "inversion.npz")["latents"]
    assert latents.shape == (3, 8, 8, 1) and latents.dtype == np.float32
    one, two = str(files / "photos" / "0.png"), str(files / "photos" / "1.png")
    assert _run(files, tmp_path / "c", "--interpolate", one, two, "--frames", "4") == 0
    assert np.load(tmp_path / "c" / "interpolation.npz")["images"].shape == (4, 8, 8, 1)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--strength", "0.5"], "edits --init-images"),
        (["--init-images", "PHOTOS"], "needs one of --strength"),
        (["--init-images", "PHOTOS", "--strength", "0.5", "--invert"], "needs one of"),
        (["--init-images", "PHOTOS", "--strength", "1.5"], "strength must be a number in"),
        (["--init-images", "PHOTOS", "--strength", "0.5", "--resample", "3"], "go with --mask"),
        (["--init-images", "MISSING", "--strength", "0.5"], "does not exist"),
        (["--init-images", "PHOTOS", "--mask", "PHOTOS/0.png", "--resample", "0"], "resample"),
        (["--interpolate", "PHOTOS", "PHOTOS/0.png"], "A has 3 images and B 1"),
    ],
)
def test_bad_editing_flags_are_one_line_exit_2_and_write_nothing(
    files, tmp_path, capsys, flags, message
):
    flags = [
        f.replace("PHOTOS", str(files / "photos")).replace("MISSING", "nowhere") for f in flags
    ]
    assert _run(files, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_mask_of_another_size_is_refused(files, tmp_path, capsys):
    np.savez(tmp_path / "mask.npz", mask=np.ones((2, 8, 8, 1)))
    flags = ["--init-images", str(files / "photos"), "--mask", str(tmp_path / "mask.npz")]
    assert _run(files, tmp_path / "out", *flags) == 2
    assert "does not broadcast" in capsys.readouterr().err
