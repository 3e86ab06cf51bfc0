"""The package's own error types: what a program reports as bad input (exit code 2).

Every check of a user's input (an argument, a config key, a file, a flag) raises `InputError`, or
`InputTypeError` for a value of the wrong type; both stay a `ValueError`/`TypeError` for callers
that catch those. A plain `ValueError` raised deep inside TensorFlow or NumPy is not the user's
input error but the program's failure (exit code 1), so the programs tell them apart by type
(`ddpm_tf.cli.run`).

`WriteError` is the other side: a file the program could not write (a full disk, a read-only
directory) is its failure (exit code 1), reported as what could not be written, where, and the
operating system's reason (`ddpm_tf.files.writing`).
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError", "WriteError"]


class InputError(ValueError):
    """A value the user gave is wrong; the message says what and how to fix it."""


class InputTypeError(InputError, TypeError):
    """A value the user gave has the wrong type."""


class WriteError(OSError):
    """A file could not be written; the message names what, where and the OS reason.

    An `OSError` still (callers that catch those keep working), but none of its subclasses that a
    program reports as bad input (`FileNotFoundError`, ...): a failed write is a failure.
    """
