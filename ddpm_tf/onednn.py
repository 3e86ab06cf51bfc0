"""TensorFlow's oneDNN kernels on or off: whichever trains the U-Net faster on this CPU, measured
once per machine and cached.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it loads, and by default turns its oneDNN
kernels on only on x86 CPUs with AVX512-VNNI, AVX512-BF16 or AMX; on others (AVX2 machines) it runs
its Eigen kernels. Which is faster for this package's convolutions is a property of the CPU, not
of its feature list, so it is measured, never guessed: the first process that imports `ddpm_tf`
on a machine times a train step of the `small_28` U-Net (batch 16, the fused kernels, FusedAdam)
in two child processes, oneDNN on and off, keeps the setting that is faster by more than
`MARGIN` (else TensorFlow's default) in the cache folder (`ddpm_tf.machine.cache_root`, keyed by
the CPU and TensorFlow's version), and every process sets ``TF_ENABLE_ONEDNN_OPTS`` from there
before TensorFlow is imported. The measurement takes about half a minute, once (each child
imports TensorFlow, compiles the step and times 7 steps after 3); concurrent first
imports wait for one measurement (a lock file). The choice is fixed per machine, so a run stays
bit-reproducible from its seed there. A measurement that failed (a child that timed out on a
loaded machine, say) keeps TensorFlow's default and is tried again at the first import a day
(`RETRY_AFTER`) later, not kept for good.

Nothing is changed when the user set ``TF_ENABLE_ONEDNN_OPTS`` (their choice), when
``DDPM_TF_TUNE=0`` (TensorFlow's default, nothing measured), or when TensorFlow was imported before
`ddpm_tf` (too late: import `ddpm_tf` first, or set the variable to what
``ddpm-onednn`` reports; a warning says so when this machine's cached choice differs from what
TensorFlow runs). ``ddpm-onednn --measure`` measures again.

This module imports no TensorFlow: `ddpm_tf._startup` calls `apply` before anything does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from ddpm_tf.files import atomic_path
from ddpm_tf.machine import cache_root, cpu_identity

ENV = "TF_ENABLE_ONEDNN_OPTS"
TUNE_ENV = "DDPM_TF_TUNE"
MARGIN = 0.05  # a setting must be this much faster than the other to replace TF's default
CHILD_TIMEOUT = 300.0  # seconds a measuring child may take (import, kernel build, steps)
MEASUREMENT = 1  # bumped when the measurement changes, so that caches are measured again
RETRY_AFTER = 86400.0  # seconds after which a measurement that failed is tried again
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # a record's "measured": local time
_CHILD = "from ddpm_tf.onednn import print_step_time; print_step_time()"  # a measuring child
_status = "not applied in this process"


ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""oneDNN's variables that cap the instructions it uses: a capped CPU runs other kernels, so it is
measured apart."""


def cache_file() -> Path:
    """The cached choice of this CPU, its oneDNN instruction cap and TensorFlow version."""
    try:
        tensorflow = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tensorflow = "none"
    limits = ",".join(os.environ.get(name, "") for name in ISA_LIMITS)
    text = f"{cpu_identity()}\n{tensorflow}\n{MEASUREMENT}\n{limits}"
    key = hashlib.sha256(text.encode()).hexdigest()
    return cache_root() / f"onednn-{key[:20]}.json"


def read_choice(path: Path) -> dict | None:
    """The cached choice, or None if there is none or it is not a whole, valid record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("setting") not in ("0", "1", None):
        return None
    return record


def word(setting: str) -> str:
    """ "on" or "off" for a setting of ``TF_ENABLE_ONEDNN_OPTS`` ("1" or "0")."""
    return "on" if setting == "1" else "off"


def due_again(record: dict, now: float | None = None) -> bool:
    """Whether a cached record is a failed measurement old enough (`RETRY_AFTER`) to try again;
    a failed record without a readable time is."""
    if not record.get("failed"):
        return False
    try:
        measured = time.mktime(time.strptime(record["measured"], TIME_FORMAT))
    except (KeyError, TypeError, ValueError):
        return True
    return (time.time() if now is None else now) - measured >= RETRY_AFTER


def decide(ms: dict[str, float | None]) -> str | None:
    """The setting to use ("1" on, "0" off) from the measured ms per step, or None to keep
    TensorFlow's default (the two within `MARGIN`, or a side failed)."""
    on, off = ms.get("1"), ms.get("0")
    if on is None or off is None:
        return None
    if on < (1.0 - MARGIN) * off:
        return "1"
    if off < (1.0 - MARGIN) * on:
        return "0"
    return None


def _time_child(setting: str) -> tuple[float | None, str]:
    """(median ms per train step with ``TF_ENABLE_ONEDNN_OPTS=setting``, or None; what happened)."""
    env = dict(os.environ, **{ENV: setting})
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.pop(name, None)  # measure the way programs train: every core
    command = [sys.executable, "-c", _CHILD]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CHILD_TIMEOUT:g} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"failed with exit code {done.returncode}: {tail}"
    ms, enabled = lines[-1].split()
    if enabled != setting:  # TensorFlow ran the other path: the time says nothing about this one
        return (
            None,
            f"TensorFlow ignored {ENV}={setting} (oneDNN {word(enabled)})",
        )
    return float(ms), "ok"


def measure() -> dict:
    """Times both settings, one child process each, and returns the record that is cached."""
    ms: dict[str, float | None] = {}
    notes = {}
    for setting in ("0", "1"):
        ms[setting], note = _time_child(setting)
        if ms[setting] is None:
            notes[setting] = note
    cpu = cpu_identity()
    return {
        "setting": decide(ms),
        "ms_per_step": ms,
        "failed": notes,
        "cpu": cpu.splitlines()[0] if cpu else "",
        "measured": time.strftime(TIME_FORMAT),
    }


def _write(path: Path, record: dict) -> None:
    """Writes `record` whole (`files.atomic_path`: a sibling renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, "the measured oneDNN choice") as scratch:
        scratch.write_text(json.dumps(record, indent=1))


@contextlib.contextmanager
def _locked(path: Path):
    """Holds an exclusive lock beside `path` (where the platform has flock), so that processes
    starting at once measure once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst two measurements
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def choice(remeasure: bool = False) -> dict:
    """The cached record of this machine, measured first if there is none, if its measurement
    failed a day ago or more (`due_again`), or if `remeasure`."""
    path = cache_file()

    def cached() -> dict | None:
        record = None if remeasure else read_choice(path)
        return None if record is None or due_again(record) else record

    record = cached()
    if record is not None:
        return record
    with _locked(path):
        record = cached()  # measured while this process waited
        if record is None:
            print(
                "ddpm_tf: timing TensorFlow's oneDNN kernels on and off on this CPU, once "
                "(about half a minute; DDPM_TF_TUNE=0 skips it)",
                file=sys.stderr,
                flush=True,
            )
            record = measure()
            _write(path, record)
    return record


def describe(record: dict) -> str:
    """The measured times of a record and where it is cached, for status lines."""
    ms = record.get("ms_per_step", {})
    timing = ", ".join(f"{word(s)} {v:.0f} ms" for s, v in sorted(ms.items()) if v is not None)
    failed = "; ".join(f"{word(s)} {n}" for s, n in record.get("failed", {}).items())
    measured = f"measured {timing or 'nothing'}" + (f" ({failed})" if failed else "")
    return measured + f", per small_28 train step, in {cache_file()}"


def apply() -> str:
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` to this machine's measured choice unless the user chose,
    ``DDPM_TF_TUNE=0`` or TensorFlow is already loaded; returns (and keeps for `status`) why."""
    global _status
    if ENV in os.environ:
        _status = f"{ENV}={os.environ[ENV]} set by the user"
    elif os.environ.get(TUNE_ENV, "").strip() == "0":
        _status = f"{TUNE_ENV}=0: TensorFlow's default"
    elif _tensorflow_loaded():
        _status = "TensorFlow was imported before ddpm_tf: TensorFlow's default"
        _warn_if_late(read_choice(cache_file()))
    else:
        try:
            record = choice()
        except OSError as err:  # the cache folder cannot be written (a WriteError is one too)
            _status = f"TensorFlow's default (the cache folder cannot be written: {err})"
        else:
            setting = record["setting"]
            if setting is None:
                _status = f"TensorFlow's default, {describe(record)}"
            else:
                os.environ[ENV] = setting
                _status = f"{ENV}={setting}, {describe(record)}"
    return _status


def _warn_if_late(record: dict | None) -> None:
    """Warns when TensorFlow, loaded before ddpm_tf, runs the setting this CPU measured slower
    (nothing is measured here: only a cached record is compared)."""
    if record is None or record.get("setting") is None:
        return
    from ddpm_tf import compat  # TensorFlow is loaded already

    running = "1" if compat.onednn_enabled() else "0"
    if running == record["setting"]:
        return
    warnings.warn(
        f"TensorFlow was imported before ddpm_tf, so it runs its oneDNN kernels "
        f"{word(running)}, which trains the U-Net slower on this CPU "
        f"({describe(record)}). Import ddpm_tf before TensorFlow, or start Python with "
        f"{ENV}={record['setting']}.",
        stacklevel=2,
    )


def _tensorflow_loaded() -> bool:
    return "tensorflow" in sys.modules


def status() -> str:
    """How this process's oneDNN setting was decided (a sentence for logs and bug reports)."""
    return _status


def _time_step() -> tuple[float, bool]:
    """(median ms of a small_28 train step at batch 16, whether TensorFlow runs oneDNN): what a
    measuring child prints."""
    import keras
    import tensorflow as tf

    from ddpm_tf import DiffusionModel, compat, default_optimizer, from_preset

    keras.utils.set_random_seed(0)
    model = DiffusionModel(from_preset("small_28", dropout=0.0))
    model.compile(default_optimizer(2e-4))
    images = tf.random.uniform((16, *model.image_shape), -1.0, 1.0, seed=0)
    iterator = iter(tf.data.Dataset.from_tensors(images).repeat())
    model.make_train_function()

    def step() -> float:
        began = time.perf_counter()
        for value in model.train_function(iterator).values():
            value.numpy()
        return time.perf_counter() - began

    for _ in range(3):  # the first traces and compiles
        step()
    return 1e3 * statistics.median(step() for _ in range(7)), compat.onednn_enabled()


def print_step_time() -> None:
    """What a measuring child does: prints "<ms per step> <1 if oneDNN ran else 0>"."""
    ms, enabled = _time_step()
    print(f"{ms:.3f} {int(enabled)}")
