"""Runs one program of the package on a failing disk, for tests/test_failed_writes.py.

    python write_faults.py FAULT PROGRAM [ARGS...]

PROGRAM is a console script (ddpm-train, ddpm-sample, ddpm-export); its exit code is this
script's. FAULT is one of

    fsize:BYTES        the kernel refuses to grow any file past BYTES bytes (RLIMIT_FSIZE: errno
                       EFBIG, "File too large"), in Python's writes and TensorFlow's C++ writers
                       alike, the way a disk fills up (the part that fits is written); it stops
                       root too
    enospc:GLOB:BYTES  Python's writes to files whose path matches GLOB fail with ENOSPC once
                       BYTES bytes went to the file (the part that fits is written)
    tf-enospc:GLOB     TensorFlow's Python file writes (`FileIO`: the checkpoint state file, ...)
                       to files matching GLOB fail as TensorFlow reports a full disk: a
                       ResourceExhaustedError "<path>; No space left on device"
    readonly:DIR       DIR is made read-only (chmod 0555) before the program starts (chmod does
                       not stop root: the tests use it for other users only)
"""

import builtins
import errno
import fnmatch
import io
import os
import resource
import signal
import sys
from importlib.metadata import entry_points


class _FullFile:
    """A file opened for writing whose disk is full after `room` more bytes."""

    def __init__(self, file, room: int):
        self._file, self._room = file, room

    def write(self, data):
        size = memoryview(data).nbytes
        if size > self._room:
            self._file.write(memoryview(data).cast("B")[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def full_disk_open(real_open, pattern: str, room: int):
    """`open` as on a disk with `room` bytes left for each file whose path matches `pattern`."""

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+") and isinstance(file, str | os.PathLike)
        if writing and fnmatch.fnmatch(os.fspath(file), pattern):
            return _FullFile(handle, room)
        return handle

    return open_


def _fill_tensorflow_writes(pattern: str) -> None:
    import tensorflow as tf
    from tensorflow.python.lib.io import file_io  # the class behind tf.io.gfile's writes

    real_write = file_io.FileIO.write

    def write(self, file_content):
        if fnmatch.fnmatch(self.name, pattern):
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{self.name}; {os.strerror(errno.ENOSPC)}"
            )
        return real_write(self, file_content)

    file_io.FileIO.write = write


def main() -> int:
    fault, program, *args = sys.argv[1:]
    kind, _, spec = fault.partition(":")
    sys.argv = [program, *args]  # before ddpm_tf is imported: its quiet start-up reads argv[0]
    (script,) = entry_points(group="console_scripts", name=program)
    run = script.load()
    if kind == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(spec), resource.RLIM_INFINITY))
    elif kind == "enospc":
        pattern, room = spec.rsplit(":", 1)
        builtins.open = io.open = full_disk_open(builtins.open, pattern, int(room))
    elif kind == "tf-enospc":
        _fill_tensorflow_writes(spec)
    elif kind == "readonly":
        os.chmod(spec, 0o555)
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
