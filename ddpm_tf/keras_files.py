"""Reading a `.keras` file the user names: one error for a file that is missing or unreadable;
writing one atomically.

Keras reports a truncated file, or one that is no zip archive at all, as a bare ValueError ("File
not found ... Please ensure the file is an accessible `.keras` zip file"), which the programs
would count as their own failure. The user chose the file, so here it is bad input
(`KerasFileError`, exit code 2) with a message that names the file and how to get a good one.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import keras

from ddpm_tf.errors import InputError
from ddpm_tf.files import writing

__all__ = ["KerasFileError", "load_keras_file", "save_keras_atomic"]


class KerasFileError(InputError):
    """A `.keras` file exists but cannot be loaded: cut short, not a zip archive, or damaged."""


def load_keras_file(path: str | os.PathLike, what: str, fix: str, **load_args: Any) -> Any:
    """The object saved in the `.keras` file `path` (`keras.models.load_model(path, **load_args)`).

    `what` names the file in messages (e.g. "classifier model") and `fix` says how to get a good
    one. Raises FileNotFoundError if there is no such file, `KerasFileError` if it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; {fix}")
    if not zipfile.is_zipfile(path):
        raise KerasFileError(
            f"{what} {str(path)!r} is not a .keras archive (a zip file): it is cut short or "
            f"another kind of file; {fix}"
        )
    try:
        return keras.models.load_model(path, **load_args)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise KerasFileError(
            f"{what} {str(path)!r} cannot be loaded ({type(err).__name__}: {reason}); {fix}"
        ) from err


def save_keras_atomic(model: keras.Model, path: str | os.PathLike, what: str) -> Path:
    """Saves `model` to the `.keras` file `path` through a sibling renamed into place, so a reader
    sees the old file or the new one, never a part; a failed write raises `WriteError`."""
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.partial.keras")  # Keras wants the suffix
    with writing(what, path, on_error=lambda: scratch.unlink(missing_ok=True)):
        model.save(scratch)
        os.replace(scratch, path)
    return path
