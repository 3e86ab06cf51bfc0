"""Images and masks for editing, read from PNG/JPEG files, folders of them, or `.npz` arrays.

Image files are decoded, center-cropped and resized to the model's shape as training on a folder
does (`ddpm_tf.datasets.image_folder.decode`); an `.npz` holds `images` (uint8 [N, H, W, C], or
floats in [-1, 1]) of the model's shape already. A mask file is a grayscale image (white: keep)
or an `.npz` with `mask` (1: keep), [H, W] or [N, H, W, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddpm_tf.datasets.image_folder import EXTENSIONS, decode
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import to_unit_range

__all__ = ["read_images", "read_mask"]


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass an image file, a folder or an .npz.")
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not found:
            raise InputError(f"folder {path} holds no {'/'.join(EXTENSIONS)} files.")
        return found
    if path.suffix.lower() not in EXTENSIONS:
        raise InputError(f"{path} is no {'/'.join(EXTENSIONS)} file, folder or .npz.")
    return [path]


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    try:
        return decode(tf.io.read_file(str(path)), size, channels).numpy()
    except tf.errors.OpError as err:
        reason = err.message.splitlines()[0] if err.message else type(err).__name__
        raise InputError(f"{path} is not a readable image: {reason.split('}} ', 1)[-1]}") from None


def _npz(path: Path, key: str) -> np.ndarray:
    with np.load(path) as data:
        if key not in data:
            raise InputError(f"{path} holds no `{key}` array (it has {sorted(data.files)}).")
        return data[key]


def read_images(path: str | os.PathLike, image_shape: tuple[int, int, int]) -> np.ndarray:
    """float32 images [N, *image_shape] in [-1, 1] from `path` (a file, a folder or an .npz)."""
    path = Path(path).expanduser()
    size, _, channels = image_shape
    if path.suffix == ".npz" and path.is_file():
        images = to_unit_range(_npz(path, "images"), f"{path}'s images")
        if images.shape[1:] != tuple(image_shape):
            raise InputError(
                f"{path}'s images have shape {images.shape[1:]}, the model takes {image_shape}; "
                "give image files, which are resized, or arrays of the model's shape."
            )
        return images
    pixels = np.stack([_decode(p, size, channels) for p in _files(path)])
    return to_unit_range(pixels, str(path))


def read_mask(path: str | os.PathLike, image_shape: tuple[int, int, int]) -> np.ndarray:
    """A 0/1 float32 mask [H, W, 1] or [N, H, W, 1] (1: keep) from a grayscale image (white:
    keep; resized as the images are) or an .npz `mask`."""
    path = Path(path).expanduser()
    size = image_shape[0]
    if path.suffix == ".npz" and path.is_file():
        mask = np.asarray(_npz(path, "mask"), np.float32)
    else:
        files = _files(path)
        if len(files) != 1:
            raise InputError(f"--mask {path}: give one mask image, not a folder of {len(files)}.")
        mask = (_decode(files[0], size, 1) >= 128).astype(np.float32)
    return mask[..., None] if mask.ndim == 2 else mask
