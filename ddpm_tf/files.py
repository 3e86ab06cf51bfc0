"""Writing files so that a failed write loses nothing and says what it could not write.

A full disk or a read-only directory must neither cost the user a file that was complete before
nor leave a half-written one where a reader looks for the complete one:

- `atomic_path(path, what)` yields a temporary sibling to write; only when the writing succeeded
  does it replace `path`, in one rename (`os.replace`, atomic within a file system), and it is
  removed otherwise. A reader sees the old file or the new one, never a part of either.
- `replace_directory(staging, target)` does the same for a directory written complete beside its
  target (`partial_sibling`): a pixel cache, an export.
- `writing(what, path)` turns the `OSError` of a write into a `WriteError` such as "could not write
  checkpoint to runs/x/checkpoints/ckpt-40: [Errno 28] No space left on device", which the programs
  report as a failure (exit code 1, `ddpm_tf.cli.run`), and runs a clean-up of the partial files.
  With `tensorflow=True` it also reads TensorFlow's reports of one: its C++ writers (checkpoints,
  SavedModels) raise a `tf.errors.OpError` whose message ends in the operating system's reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ddpm_tf.errors import WriteError

__all__ = ["atomic_path", "os_reason", "partial_sibling", "replace_directory", "writing"]

# The operating system's texts of its error numbers, as TensorFlow appends them to its messages.
_STRERRORS = {os.strerror(number): number for number in sorted(errno.errorcode, reverse=True)}


def os_reason(error: BaseException, tensorflow: bool = False) -> str | None:
    """The reason "[Errno N] text" of an OSError (or, with `tensorflow`, of a TensorFlow error
    reporting one); None for any other error, which is then not a failed write."""
    if isinstance(error, OSError):
        if error.errno is not None and error.strerror:
            return f"[Errno {error.errno}] {error.strerror}"
        return str(error) or type(error).__name__
    tf = sys.modules.get("tensorflow")
    if not tensorflow or tf is None or not isinstance(error, tf.errors.OpError):
        return None
    for text, number in _STRERRORS.items():  # TensorFlow's IOError: "<path>; <strerror>"
        if f"; {text}" in error.message:
            return f"[Errno {number}] {text}"
    return None


def _quietly(clean_up: Callable[[], object] | None) -> None:
    """Runs a clean-up after a failed write; its own failure (the same full disk or read-only
    directory) must not hide the first."""
    if clean_up is not None:
        with contextlib.suppress(Exception):
            clean_up()


@contextlib.contextmanager
def writing(
    what: str,
    path: str | os.PathLike,
    *,
    tensorflow: bool = False,
    on_error: Callable[[], object] | None = None,
) -> Iterator[None]:
    """Reports a failed write inside as `WriteError("could not write {what} to {path}: reason")`.

    `on_error` runs on any exception (the partial files of a write are garbage whatever stopped
    it); errors that are not a failed write pass unchanged, a `WriteError` from an inner block too.
    """
    try:
        yield
    except BaseException as err:
        _quietly(on_error)
        reason = None if isinstance(err, WriteError) else os_reason(err, tensorflow)
        if reason is None:
            raise
        raise WriteError(f"could not write {what} to {path}: {reason}") from err


def _fsync(path: Path) -> None:
    """Flushes a written file to disk: some file systems report a full disk only here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write; replaces `path` with it at the end.

    If the block fails, the sibling is removed and `path` (if it existed) is untouched; a failed
    write raises `WriteError` (see `writing`).
    """
    path = Path(path)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    with writing(what, path, on_error=lambda: scratch.unlink(missing_ok=True)):
        yield scratch
        _fsync(scratch)
        os.replace(scratch, path)


def partial_sibling(path: str | os.PathLike) -> Path:
    """Where a directory is written before it replaces `path`: `<path>.partial`."""
    path = Path(path)
    return path.with_name(f"{path.name}.partial")


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Puts the complete directory `staging` at `target`, replacing what was there.

    The old `target` is renamed aside first and removed only after the new one is in place, so
    that at every moment one complete directory is there (renames need no space on the disk).
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
