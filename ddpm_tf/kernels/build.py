"""Compiles the package's C++ kernels against the installed TensorFlow, once per machine.

The source ships with the package (``*.cc`` beside this file). The first process that needs the
library compiles it with the system C++ compiler (``$CXX`` or ``g++``; its time:
docs/benchmarks.md) into a cache folder, and later processes load it from there. Nothing is
downloaded.

The cache folder is ``$DDPM_TF_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/ddpm_tf/kernels``, else
``~/.cache/ddpm_tf/kernels``. Each library lives in an entry ``SETUP-SOURCE``: a hash of what it
is built with (TensorFlow, the compiler's version, the flags, the CPU: ``-march=native`` code must
not run on another CPU of a shared home) and a hash of the sources. An entry is written whole:
compiled in a private folder inside it, then renamed into place, so that two processes building at
once each finish with a whole library. The library ends with a checksum of itself (a trailer the
loader ignores), checked before it is loaded: a truncated shared object can kill the process that
maps it (SIGBUS), a damaged one is rebuilt instead.

Whatever goes wrong ends in TensorFlow's own ops with one warning line on the logger
``ddpm_tf.kernels`` saying why (and :func:`load` returns the same sentence for
``ddpm_tf.kernels.status``), never in a traceback or a hang:

- ``$CXX`` names no executable, or one that does not answer ``--version`` (not a compiler);
- the compiler fails (its first error line is quoted); the entry then records the failure in
  ``build-failed.txt`` and later processes fall back at once until it is deleted;
- the build takes longer than ``$DDPM_TF_KERNEL_BUILD_TIMEOUT`` seconds (default 300): the
  compiler and its children are killed (not recorded: a later process tries again);
- a cached library is damaged or does not load: it is rebuilt once; if the new one does not load
  either, the failure is recorded as above;
- the cache folder cannot be written: the library is built in a temporary folder for this process
  only (and loaded from there).

With no compiler at all (``$CXX`` unset, no ``g++``) TensorFlow's ops are the plain set-up, said
at INFO level only.

Building a new entry prunes older ones that are certainly this package's and stale: entries of the
same SETUP with another SOURCE (an older ``group_norm.cc``) and entries named in the earlier
20-digit scheme, holding only the files written here and none of them touched for a day (a load
touches its library, a build in progress its private folder). Entries of other SETUPs (another
CPU on a shared home, another TensorFlow) and anything else in the folder are left alone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from ddpm_tf.errors import InputError
from ddpm_tf.machine import cache_root
from ddpm_tf.machine import cpu_identity as _cpu_identity

SOURCES = ("group_norm.cc",)
LIBRARY_NAME = "libddpm_tf_kernels.so"
FAILURE_NAME = "build-failed.txt"
TIMEOUT_ENV = "DDPM_TF_KERNEL_BUILD_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
PRUNE_AFTER = 24 * 3600.0  # seconds an entry must be untouched before it counts as stale
FALLBACK = "using TensorFlow's ops"

_TRAILER_TAG = b"\0ddpm_tf sha256\0"
_TRAILER_SIZE = len(_TRAILER_TAG) + 32
_ENTRY = re.compile(r"(?P<setup>[0-9a-f]{12})-(?P<source>[0-9a-f]{12})")
_LEGACY_ENTRY = re.compile(r"[0-9a-f]{20}")  # the scheme before SETUP-SOURCE
_TEMP_PREFIX = "tmp"

log = logging.getLogger("ddpm_tf.kernels")


class BuildError(RuntimeError):
    """A build command failed or could not start; the message is one line."""


class BuildTimeout(BuildError):
    """A build command was still running when the build's time was up, and was killed."""

    def __init__(self, what: str):
        super().__init__(
            f"{what} did not finish within the build's {build_timeout():g} s "
            f"(${TIMEOUT_ENV}) and was stopped"
        )


def compiler() -> str | None:
    """The C++ compiler to use (``$CXX`` or ``g++`` on PATH), or None if that is no executable."""
    return shutil.which(os.environ.get("CXX") or "g++")


def build_timeout() -> float:
    """Seconds the whole build may take (``$DDPM_TF_KERNEL_BUILD_TIMEOUT``, default 300)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds > 0 "
            f"(default {DEFAULT_TIMEOUT:g})."
        )
    return value


def arch_flags() -> list[str]:
    """Code generation for this CPU. On x86-64 AVX512-FP16 stays off: Eigen's headers in
    TensorFlow 2.21 do not compile with it under GCC 12."""
    if platform.machine() in ("x86_64", "AMD64"):
        return ["-march=native", "-mno-avx512fp16"]
    return ["-mcpu=native"] if platform.machine() in ("aarch64", "arm64") else []


def compile_flags() -> list[str]:
    """Flags of the compile step. -ffast-math lets GCC vectorise expf (libmvec); it is not used
    when linking, so the library does not change the process's floating-point mode."""
    return [
        *tf.sysconfig.get_compile_flags(),
        "-O3",
        "-ffast-math",
        "-fPIC",
        "-w",
        *arch_flags(),
    ]


def _source_dir() -> Path:
    return Path(__file__).resolve().parent


def library_key(cxx: str, deadline: float | None = None) -> str:
    """The cache entry's name, ``SETUP-SOURCE`` (see the module docstring). Asks the compiler for
    its version, by `deadline` (``time.monotonic()``; default the build timeout from now), so a
    program that is not a compiler raises BuildError here."""
    if deadline is None:
        deadline = time.monotonic() + build_timeout()
    version = _run([cxx, "--version"], deadline, f"`{Path(cxx).name} --version`")
    setup = hashlib.sha256()
    for part in (tf.__version__, version, " ".join(compile_flags()), _cpu_identity()):
        setup.update(part.encode())
    source = hashlib.sha256()
    for name in SOURCES:
        source.update((_source_dir() / name).read_bytes())
    return f"{setup.hexdigest()[:12]}-{source.hexdigest()[:12]}"


def _first_error_line(output: str) -> str:
    """The line of a compiler's output that names the problem: its first error, else its last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    line = errors[0] if errors else (lines[-1] if lines else "no output")
    return line if len(line) <= 300 else line[:297] + "..."


def _stop(process: subprocess.Popen) -> None:
    """Kills `process` and everything it started (its own session) and reaps it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=10)


def _run(command: list[str], deadline: float, what: str) -> str:
    """Runs one build command in its own session and returns its stdout. Raises BuildError if
    it cannot start or exits non-zero, and BuildTimeout if it is still running at `deadline`
    (then it is killed with its children: a compiler's cc1plus, as and ld outlive a killed
    driver otherwise)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BuildTimeout(what)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as err:
        raise BuildError(f"{what} could not start ({err.strerror or err})") from err
    try:
        out, err = process.communicate(timeout=remaining)
    except BaseException as interrupt:  # the timeout, or an interrupt: nothing may outlive us
        _stop(process)
        if isinstance(interrupt, subprocess.TimeoutExpired):
            raise BuildTimeout(what) from None
        raise
    if process.returncode:
        log.debug("%s failed:\n%s", " ".join(command), err)
        raise BuildError(
            f"{what} exited with status {process.returncode}: {_first_error_line(err + out)}"
        )
    return out


def _seal(path: Path) -> None:
    """Appends the checksum trailer that `read_library` checks."""
    data = path.read_bytes()
    path.write_bytes(data + _TRAILER_TAG + hashlib.sha256(data).digest())


def read_library(path: Path) -> bytes | None:
    """The shared object in `path` without its trailer, or None if the trailer is missing or does
    not match (a damaged or foreign file, which must not be loaded)."""
    data = path.read_bytes()
    if len(data) < _TRAILER_SIZE or data[-_TRAILER_SIZE:-32] != _TRAILER_TAG:
        return None
    body = data[:-_TRAILER_SIZE]
    return body if hashlib.sha256(body).digest() == data[-32:] else None


def _open(path: Path) -> tuple[object | None, str]:
    """(the loaded op library or None, why it did not load)."""
    if read_library(path) is None:
        return None, "its checksum does not match: the file is damaged"
    try:
        return tf.load_op_library(str(path)), ""
    except (tf.errors.OpError, OSError) as err:
        return None, " ".join(str(err).split())


def _compile(cxx: str, folder: Path, deadline: float) -> Path:
    """Compiles and links the sources in `folder`; returns the sealed library there."""
    objects = []
    for name in SOURCES:
        obj = folder / (Path(name).stem + ".o")
        command = [cxx, "-c", str(_source_dir() / name), "-o", str(obj), *compile_flags()]
        _run(command, deadline, f"compiling {name} with {cxx}")
        objects.append(str(obj))
    out = folder / LIBRARY_NAME
    command = [cxx, "-shared", *objects, "-o", str(out), *tf.sysconfig.get_link_flags()]
    _run(command, deadline, f"linking with {cxx}")
    _seal(out)
    return out


@contextlib.contextmanager
def _workspace(entry: Path) -> Iterator[tuple[Path, str]]:
    """A private build folder inside `entry` (so the library can be renamed into place) and "",
    or, if the cache cannot be written, one in the system's temporary folder and the reason."""
    try:
        entry.mkdir(parents=True, exist_ok=True)
        folder = tempfile.TemporaryDirectory(
            prefix=_TEMP_PREFIX, dir=entry, ignore_cleanup_errors=True
        )
        unwritable = ""
    except OSError as err:
        folder = tempfile.TemporaryDirectory(prefix="ddpm_tf_kernels-")
        unwritable = f"the cache folder {cache_root()} cannot be written ({err.strerror or err})"
    with folder as path:
        yield Path(path), unwritable


def _record_failure(entry: Path, reason: str) -> None:
    """Writes `reason` to the entry's failure file (best effort: the cache may be read-only)."""
    with contextlib.suppress(OSError):
        partial = entry / f"{_TEMP_PREFIX}-{FAILURE_NAME}.{os.getpid()}"
        partial.write_text(reason + "\n")
        os.replace(partial, entry / FAILURE_NAME)


def _recorded_failure(entry: Path) -> str:
    try:
        return (entry / FAILURE_NAME).read_text().strip()
    except OSError:
        return ""


def _is_stale(entry: Path, key: str, now: float) -> bool:
    """Whether `entry` is certainly an old entry of this package (see the module docstring)."""
    name = entry.name
    match = _ENTRY.fullmatch(name)
    ours = (match and match["setup"] == key.split("-")[0]) or _LEGACY_ENTRY.fullmatch(name)
    if name == key or not ours or entry.is_symlink() or not entry.is_dir():
        return False
    for child in (entry, *entry.iterdir()):
        written_here = child == entry or child.name in (LIBRARY_NAME, FAILURE_NAME)
        if not (written_here or child.name.startswith(_TEMP_PREFIX)) or child.is_symlink():
            return False
        if now - child.lstat().st_mtime < PRUNE_AFTER:
            return False
    return True


def prune(root: Path, key: str) -> list[Path]:
    """Removes the stale entries of `root` beside `key` (never fails); returns what it removed."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in sorted(root.iterdir()):
            with contextlib.suppress(OSError):
                if _is_stale(entry, key, now):
                    shutil.rmtree(entry)
                    removed.append(entry)
    for entry in removed:
        log.info("ddpm_tf: removed the stale kernel cache entry %s", entry)
    return removed


def _no_compiler() -> tuple[str, int]:
    name = os.environ.get("CXX")
    if not name:
        return f"no C++ compiler (set $CXX or install g++); {FALLBACK}", logging.INFO
    path = Path(name)
    if os.sep in name and path.is_file():
        what = "is not executable"
    elif os.sep in name and path.exists():
        what = "is not a file"
    else:
        what = "was not found"
    return f"$CXX={name!r} {what}; {FALLBACK}", logging.WARNING


def _find_or_build() -> tuple[object | None, str, int]:
    """(the library or None, the sentence of `load`, the level to log that sentence at)."""
    cxx = compiler()
    if cxx is None:
        return None, *_no_compiler()
    deadline = time.monotonic() + build_timeout()
    try:
        key = library_key(cxx, deadline)
    except BuildError as err:
        return None, f"{cxx} does not work as a C++ compiler ({err}); {FALLBACK}", logging.WARNING
    entry = cache_root() / key
    target = entry / LIBRARY_NAME
    damaged = ""
    if target.exists():
        library, why = _open(target)
        if library is not None:
            with contextlib.suppress(OSError):
                os.utime(target)  # in use: not stale
            return library, f"loaded {target}", logging.INFO
        damaged = why
    if failure := _recorded_failure(entry):
        why = f"the fused kernels failed to build before ({failure}); {FALLBACK}"
        return None, f"{why} (delete {entry / FAILURE_NAME} to try again)", logging.WARNING
    return _build(cxx, key, deadline, damaged)


def _build(cxx: str, key: str, deadline: float, damaged: str) -> tuple[object | None, str, int]:
    """Builds the entry `key` and loads it (as `_find_or_build`); `damaged` says why the library
    that was there did not load, if one was."""
    entry = cache_root() / key
    target = entry / LIBRARY_NAME
    log.info("ddpm_tf: compiling the fused kernels into %s (once per machine)", target)
    with _workspace(entry) as (folder, unwritable):
        try:
            built = _compile(cxx, folder, deadline)
        except BuildError as err:
            reason = (
                f"{target} did not load ({damaged}), rebuilding it: {err}" if damaged else str(err)
            )
            if not (isinstance(err, BuildTimeout) or unwritable):
                _record_failure(entry, reason)
            return None, f"the fused kernels did not build ({reason}); {FALLBACK}", logging.WARNING
        if not unwritable:
            os.replace(built, target)
            built = target
            prune(cache_root(), key)
        library, why = _open(built)
    if library is None:
        reason = f"the library built in {built} did not load ({why})"
        if damaged:
            reason = f"{target} did not load ({damaged}), nor once rebuilt ({why})"
        if not unwritable:
            _record_failure(entry, reason)
        return None, f"{reason}; {FALLBACK}", logging.WARNING
    if unwritable:
        why = f"compiled for this process only: {unwritable}; set $DDPM_TF_KERNEL_CACHE"
        return library, f"{why} to a writable folder", logging.WARNING
    if damaged:
        return library, f"compiled {target} again: it did not load ({damaged})", logging.WARNING
    return library, f"compiled {target}", logging.INFO


@functools.cache
def load() -> tuple[object | None, str]:
    """(the loaded op library or None, a sentence on how it was found or why it is not in use).

    Once per process; the sentence is also logged, as a warning when something is wrong.
    """
    try:
        library, why, level = _find_or_build()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001  (anything unforeseen must still leave TF's ops)
        library, level = None, logging.WARNING
        why = f"the fused kernels could not be set up ({type(err).__name__}: {err}); {FALLBACK}"
        why = " ".join(why.split())
    log.log(level, "ddpm_tf: %s", why)
    return library, why
