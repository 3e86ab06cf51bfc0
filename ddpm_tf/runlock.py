"""One writer per run directory: an operating-system lock that dies with its holder.

`ddpm-train` holds `run_lock(directory)` from before its first write to its end (the chief of a
cluster alone: the other workers write nothing there). A second `ddpm-train` on the same directory
is refused before it writes or changes anything, by a `RunLockedError` that names the holder:

    run directory runs/digits is being trained by process 1234 on host gpu1 (started
    2025-01-31 12:00:00 +0000, command: ddpm-train --config digits); wait for it or stop it.

The lock is `fcntl.flock` on `<directory>/.lock`, which the kernel releases when the holder's
process ends, however it ends: a SIGKILLed or crashed run leaves the file behind but never blocks
the rerun, which takes the lock and overwrites the file's text (the holder's pid, host, start
time and command, written after the lock is taken, for the refusal's message only). A clean exit
removes the file. On NFS, Linux maps flock onto the server's byte-range locks (NFSv4, or v3 with
lockd).

Readers (`ddpm-sample`, `ddpm-eval`, `ddpm-export`, `runs.load_model`) take no lock: they read the
newest complete checkpoint of a run in progress (`ddpm_tf.runs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ddpm_tf.errors import InputError
from ddpm_tf.files import writing

LOCK_FILE = ".lock"

__all__ = ["LOCK_FILE", "RunLockedError", "holder", "run_lock"]


class RunLockedError(InputError):
    """Another live process holds the run directory's lock (exit code 2: choose another
    directory, or wait)."""


def holder(directory: str | os.PathLike) -> dict | None:
    """What the lock file of `directory` says about the process that took it (pid, host,
    started, command), or None if there is no such file or it holds no description yet.

    The file outlives a killed holder: only a refused `run_lock` tells that the holder lives.
    """
    try:
        text = (Path(directory) / LOCK_FILE).read_text()
    except FileNotFoundError:
        return None
    return _parse(text)


def _parse(text: str) -> dict | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _command() -> str:
    """This process's command line: "ddpm-train ARGS", or "python -m MODULE ARGS"."""
    program = Path(sys.argv[0]).name
    if program in ("__main__.py", "-c") and getattr(sys, "orig_argv", None):
        return shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])
    return shlex.join([program, *sys.argv[1:]])


def _description() -> str:
    """This process, as the lock file's text."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": _command(),
    }
    return json.dumps(info) + "\n"


def _refusal(directory: Path, fd: int) -> RunLockedError:
    """The error of a refused lock, naming the holder from the lock file's text."""
    info = None
    for _ in range(20):  # the holder writes its text just after taking the lock
        info = _parse(os.pread(fd, 65536, 0).decode(errors="replace"))
        if info is not None:
            break
        time.sleep(0.05)
    if info is None:
        who = f"another process (it has not described itself in {directory / LOCK_FILE})"
    else:
        who = f"process {info.get('pid')} on host {info.get('host')}"
        who += f" (started {info.get('started')}, command: {info.get('command')})"
    return RunLockedError(
        f"run directory {directory} is being trained by {who}; wait for it or stop it."
    )


def _open_locked(path: Path) -> int:
    """A descriptor of `path` holding its exclusive lock; raises `RunLockedError` if taken."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _refusal(path.parent, fd)
            os.close(fd)
            raise error from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed the file as we opened it: lock the one there now


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Holds the exclusive lock of the run directory `directory` (created if missing).

    Raises `RunLockedError`, having changed nothing, if another open lock holds it (another
    process, or another `run_lock` of this one). Yields the lock file's path.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    with writing("the run directory's lock file", path):
        directory.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
    try:
        with writing("the run directory's lock file", path):
            text = _description().encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):  # a failed first start removed the directory
            path.unlink()
        os.close(fd)
