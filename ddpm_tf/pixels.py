"""Pixels: uint8 images <-> the model's [-1, 1] range, and image grids saved as PNG.

The one place that knows how pixels map to model inputs (``x / 127.5 - 1``) and back, and how a
batch of images becomes one picture. It imports no dataset code, so the exporters, the classifier,
the evaluation and the programs can use it without loading the tfds pipeline.

Small images (8x8 digits) are upscaled in grids by an integer factor with nearest-neighbour
repetition, so every source pixel becomes a sharp ``scale x scale`` block and no values are
invented.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError, InputTypeError
from ddpm_tf.files import atomic_path

__all__ = [
    "FLOAT_TOLERANCE",
    "auto_scale",
    "make_grid",
    "resize_square",
    "save_grid",
    "scale_to_unit",
    "to_unit_range",
    "unit_to_uint8",
]


def scale_to_unit(images: tf.Tensor) -> tf.Tensor:
    """Maps uint8 pixels in [0, 255] to float32 in [-1, 1] as ``x / 127.5 - 1``.

    Raises:
        TypeError: if ``images`` is not uint8 (already-scaled floats would be silently wrong).
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise InputTypeError(
            f"scale_to_unit expects uint8 pixels in [0, 255], got {images.dtype.name}"
        )
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def resize_square(
    image: tf.Tensor, size: int, method: str = "area", center_crop: bool = True
) -> tf.Tensor:
    """A uint8 image [H, W, C] as uint8 [size, size, C], resized with antialiasing.

    With `center_crop` the largest central square is cut first, keeping the aspect ratio;
    otherwise non-square images are stretched.
    """
    if center_crop:
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        side = tf.minimum(height, width)
        image = tf.image.crop_to_bounding_box(
            image, (height - side) // 2, (width - side) // 2, side, side
        )
    resized = tf.image.resize(image, (size, size), method=method, antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def unit_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`scale_to_unit`: clips to [-1, 1] and rounds ``(x + 1) * 127.5`` to uint8.

    Used to turn model samples back into displayable/exportable images. Exact on the 256 values
    produced by :func:`scale_to_unit`.
    """
    images = tf.clip_by_value(tf.cast(images, tf.float32), -1.0, 1.0)
    return tf.cast(tf.round((images + 1.0) * 127.5), tf.uint8)


FLOAT_TOLERANCE = 0.05
"""Float images may stray this far outside [-1, 1] (sampler round-off) before they are rejected."""


def to_unit_range(images: object, arg: str = "images") -> np.ndarray:
    """Checks images [N, H, W, C] (C in 1, 3) and returns them as float32 in [-1, 1].

    uint8 pixels map as ``x / 127.5 - 1`` (:func:`scale_to_unit`); floats must already be
    in [-1, 1] (up to ``FLOAT_TOLERANCE``, then clipped), so pixels in [0, 255] or [0, 1] stored
    as floats are rejected rather than silently mis-scaled.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3):
        raise InputError(
            f"{arg} must have shape [N, H, W, C] with N >= 1 and C in (1, 3), got shape {x.shape}"
        )
    if x.dtype == np.uint8:
        return scale_to_unit(x).numpy()
    if not np.issubdtype(x.dtype, np.floating):
        raise InputTypeError(f"{arg} must be uint8 in [0, 255] or floats in [-1, 1], got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{arg} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        raise InputError(
            f"float {arg} must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; pass uint8 "
            "pixels instead, or map model outputs with ddpm_tf.pixels.unit_to_uint8"
        )
    return np.clip(x, -1.0, 1.0).astype(np.float32)


MIN_CELL_PIXELS = 64
"""With ``scale=None`` images are upscaled until their longer side is at least this many pixels."""


def auto_scale(height: int, width: int, min_pixels: int = MIN_CELL_PIXELS) -> int:
    """The smallest integer factor >= 1 that makes ``max(height, width) * factor >= min_pixels``."""
    return max(1, math.ceil(min_pixels / max(height, width)))


def make_grid(
    images: np.ndarray,
    ncols: int | None = None,
    scale: int | None = None,
    pad: int = 1,
    pad_value: int = 0,
) -> np.ndarray:
    """Tiles uint8 images [N, H, W, C] (C in 1, 3, 4) into one uint8 array [Hg, Wg, C].

    Args:
        images: uint8 [N, H, W, C]; floats from a model go through :func:`unit_to_uint8` first.
        ncols: images per row; default ``ceil(sqrt(N))``. Rows are ``ceil(N / ncols)``; unused
            cells of the last row are filled with ``pad_value``.
        scale: integer nearest-neighbour upscaling factor; default :func:`auto_scale`.
        pad: pixels of ``pad_value`` between cells and around the border (after scaling).
        pad_value: the padding's grey level in [0, 255].

    Returns:
        uint8 [rows * (H * scale) + (rows + 1) * pad, ncols * (W * scale) + (ncols + 1) * pad, C].
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputTypeError(
            f"images must be uint8 in [0, 255], got dtype {images.dtype}; convert model outputs "
            "in [-1, 1] with ddpm_tf.pixels.unit_to_uint8"
        )
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"images must have shape [N, H, W, C] with N >= 1 and C in (1, 3, 4), got "
            f"{images.shape}"
        )
    n, height, width, channels = images.shape
    ncols = math.ceil(math.sqrt(n)) if ncols is None else check_int(ncols, "ncols", 1)
    scale = auto_scale(height, width) if scale is None else check_int(scale, "scale", 1)
    pad = check_int(pad, "pad", 0)
    pad_value = check_int(pad_value, "pad_value", 0)
    if pad_value > 255:
        raise InputError(f"pad_value must be in [0, 255], got {pad_value}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)

    cells = images.repeat(scale, axis=1).repeat(scale, axis=2)
    cell_h, cell_w = height * scale, width * scale
    grid = np.full(
        (nrows * cell_h + (nrows + 1) * pad, ncols * cell_w + (ncols + 1) * pad, channels),
        pad_value,
        dtype=np.uint8,
    )
    for index, cell in enumerate(cells):
        row, col = divmod(index, ncols)
        top, left = pad + row * (cell_h + pad), pad + col * (cell_w + pad)
        grid[top : top + cell_h, left : left + cell_w] = cell
    return grid


def save_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    ncols: int | None = None,
    scale: int | None = None,
    pad: int = 1,
    pad_value: int = 0,
) -> Path:
    """Writes :func:`make_grid` of uint8 ``images`` [N, H, W, C] to ``path`` as a PNG.

    Grayscale images give an 8-bit grey PNG, 3 channels RGB, 4 channels RGBA. The parent
    directory is created if missing. The file is replaced only once the new one is complete: a
    failed write (`WriteError`) leaves a grid that was there as it was. Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"path must end with .png, got {str(path)!r}")
    grid = make_grid(images, ncols=ncols, scale=scale, pad=pad, pad_value=pad_value)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = grid[..., 0] if grid.shape[-1] == 1 else grid
    with atomic_path(path, "sample grid") as scratch:
        Image.fromarray(picture).save(scratch, format="PNG")
    return path
