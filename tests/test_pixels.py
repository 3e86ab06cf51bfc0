"""Tests for ddpm_tf.pixels: the uint8 <-> [-1, 1] mapping, grid layout, upscaling and the PNG round trip."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ddpm_tf.pixels import auto_scale, make_grid, save_grid, scale_to_unit, unit_to_uint8


def numbered_images(n: int, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 [n, H, W, C] with distinct pixel values (1 + a running index, mod 255, never 0)."""
    values = np.arange(n * height * width * channels) % 255 + 1
    return values.reshape(n, height, width, channels).astype(np.uint8)


def test_grid_layout_and_pixels():
    images = numbered_images(5, 3, 4, 1)
    grid = make_grid(images, ncols=3, scale=2, pad=1, pad_value=0)
    # 2 rows of 6-pixel cells and 3 columns of 8-pixel cells, with 1-pixel gaps and border.
    assert grid.shape == (2 * 6 + 3, 3 * 8 + 4, 1)
    for index in range(5):
        row, col = divmod(index, 3)
        top, left = 1 + row * 7, 1 + col * 9
        cell = grid[top : top + 6, left : left + 8, 0]
        expected = np.kron(images[index, :, :, 0], np.ones((2, 2), np.uint8))
        np.testing.assert_array_equal(cell, expected)
    # The sixth cell is empty and all padding is pad_value: the grid holds exactly the
    # 5 * 6 * 8 upscaled pixels, all non-zero.
    assert np.count_nonzero(grid) == 5 * 6 * 8
    np.testing.assert_array_equal(grid[8:14, 19:27], 0)


def test_grid_defaults_square_and_auto_scale():
    images = numbered_images(7, 8, 8, 3)
    grid = make_grid(images, pad=0)
    # ncols = ceil(sqrt(7)) = 3, 3 rows, 8x8 digits scaled by 8 to 64 pixels.
    assert grid.shape == (3 * 64, 3 * 64, 3)
    np.testing.assert_array_equal(grid[:8, :8], np.broadcast_to(images[0, 0, 0], (8, 8, 3)))
    assert [auto_scale(s, s) for s in (8, 28, 32, 64, 256)] == [8, 3, 2, 1, 1]
    # Fewer images than columns: the grid is one row of N cells.
    assert make_grid(images[:2], ncols=5, scale=1, pad=0).shape == (8, 16, 3)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_grid_png_round_trip(tmp_path, channels, mode):
    images = numbered_images(6, 8, 8, channels)
    path = save_grid(images, tmp_path / "sub" / "grid.png", ncols=2, scale=3, pad=2, pad_value=255)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == mode
        pixels = np.asarray(png)
    expected = make_grid(images, ncols=2, scale=3, pad=2, pad_value=255)
    np.testing.assert_array_equal(pixels.reshape(expected.shape), expected)


def test_grid_bad_input():
    good = numbered_images(2, 8, 8, 1)
    with pytest.raises(TypeError, match="unit_to_uint8"):
        make_grid(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\].*\(8, 8, 1\)"):
        make_grid(good[0])
    with pytest.raises(ValueError, match="C in"):
        make_grid(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="ncols must be an int >= 1, got 0"):
        make_grid(good, ncols=0)
    with pytest.raises(ValueError, match="scale must be an int >= 1, got 1.5"):
        make_grid(good, scale=1.5)
    with pytest.raises(ValueError, match="pad_value must be in"):
        make_grid(good, pad_value=300)
    with pytest.raises(ValueError, match=r"\.png"):
        save_grid(good, "grid.jpg")


def test_scale_to_unit_known_pixels():
    pixels = np.array([0, 51, 128, 255], np.uint8)
    expected = np.array([-1.0, -0.6, 1.0 / 255.0, 1.0])  # (2 * v - 255) / 255
    out = scale_to_unit(pixels)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert out.numpy()[0] == -1.0 and out.numpy()[-1] == 1.0


def test_unit_to_uint8_round_trip_is_exact_on_all_values():
    pixels = np.arange(256, dtype=np.uint8)
    back = unit_to_uint8(scale_to_unit(pixels))
    assert back.dtype == tf.uint8
    np.testing.assert_array_equal(back.numpy(), pixels)


def test_unit_to_uint8_clips_and_rounds():
    out = unit_to_uint8(np.array([-3.0, -1.0, -0.6, 0.999, 7.0], np.float32)).numpy()
    np.testing.assert_array_equal(out, [0, 0, 51, 255, 255])


def test_scale_to_unit_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        scale_to_unit(np.zeros((2, 2), np.float32))
