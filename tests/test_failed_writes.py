"""Failed writes lose nothing: a checkpoint, pixel cache, sample grid or export that cannot be
written (a full disk, a read-only directory) stops the program with one line and exit code 1 and
leaves what was there before intact, so the run resumes from its previous checkpoint.

The faults are injected into a fresh process (tests/scripts/write_faults.py): a file size limit
the kernel enforces (EFBIG, for Python's and TensorFlow's writers alike, and for root), a full
disk for chosen files (ENOSPC), or a read-only directory (not for root, whom chmod does not stop).
"""

from __future__ import annotations

import builtins
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL

from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.errors import WriteError
from ddpm_tf.runs import load_model

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from write_faults import full_disk_open  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
ROOT = os.geteuid() == 0


def _faulty(fault: str, program: str, *args: str) -> subprocess.CompletedProcess:
    """Runs `program` with `fault` (see write_faults.py) in a fresh process."""
    command = [sys.executable, str(SCRIPTS / "write_faults.py"), fault, program, *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)


PROGRESS = re.compile(r"[\w ]+: \d+/\d+ \w+ \| .* \| ETA ")  # cli.ProgressLine's reports


def _one_failure_line(proc: subprocess.CompletedProcess, line: str) -> None:
    """Exit code 1, and `line` the one line on stderr besides the progress reports."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    *progress, last = proc.stderr.splitlines()
    assert last == line and all(PROGRESS.match(report) for report in progress), proc.stderr


def _contents(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every file's bytes (None for a directory) under `directory`, but those under `skip`."""
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if not str(p.relative_to(directory)).startswith(skip)
    }


def _resume(run: Path, data_dir: str, steps: int) -> list[str]:
    return ["--run-dir", str(run), "--data-dir", data_dir, *SMALL, f"train.steps={steps}"]


# What a resumed run rewrites by design: the config (train.steps) and model.json (at every start;
# Keras names its layers by what the process built before), the curve (rows of its steps, dropped
# again by the rerun) and TensorBoard's logs (a new event file).
REWRITTEN = ("config.json", "model.json", "curve.csv", "logs")


@pytest.mark.parametrize(
    "fault",
    [
        "fsize",
        pytest.param("readonly", marks=pytest.mark.skipif(ROOT, reason="chmod does not stop root")),
    ],
)
def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(run_copy, data_dir, fault):
    """The run trains 8 -> 16 and its checkpoint at 12 cannot be written (a file size limit below
    the checkpoint's size, or a read-only checkpoints/); the run is as it was, so a rerun resumes
    from ckpt-8 (that a resume from a checkpoint is exact, test_training's kill test shows)."""
    before = _contents(run_copy, REWRITTEN)
    checkpoints = run_copy / "checkpoints"
    injection = f"fsize:{1_000_000}" if fault == "fsize" else f"readonly:{checkpoints}"
    proc = _faulty(injection, "ddpm-train", *_resume(run_copy, data_dir, 16))
    reason = "[Errno 27] File too large" if fault == "fsize" else "[Errno 13] Permission denied"
    _one_failure_line(
        proc, f"ddpm-train: failed: could not write checkpoint to {checkpoints}/ckpt-12: {reason}"
    )
    checkpoints.chmod(0o755)
    assert _contents(run_copy, REWRITTEN) == before  # no part of ckpt-12, nothing else changed
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-8")
    assert load_model(run_copy).step == 8


def test_a_checkpoint_whose_state_file_cannot_be_written_is_removed(run_copy, data_dir):
    """The disk fills after ckpt-12's files, as TensorFlow writes the `checkpoint` state file
    naming it: the complete but unnamed ckpt-12 is removed, the state still names ckpt-8."""
    before = _contents(run_copy, REWRITTEN)
    checkpoints = run_copy / "checkpoints"
    proc = _faulty("tf-enospc:*/checkpoint.tmp*", "ddpm-train", *_resume(run_copy, data_dir, 16))
    _one_failure_line(
        proc,
        f"ddpm-train: failed: could not write checkpoint to {checkpoints}/ckpt-12: "
        "[Errno 28] No space left on device",
    )
    assert _contents(run_copy, REWRITTEN) == before
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-8")
    assert load_model(run_copy).step == 8


def test_a_pixel_cache_that_cannot_be_written_leaves_no_run(tmp_path, data_dir):
    """The first start of a run decodes its data into pixel caches: the disk fills 50 kB into
    the training split's. Nothing of the run is left: its next start is a first start again."""
    run = tmp_path / "run"
    args = ["--run-dir", str(run), "--data-dir", data_dir, *SMALL, "train.steps=4"]
    proc = _faulty("enospc:*/pixels.u8:50000", "ddpm-train", *args)
    _one_failure_line(
        proc,
        f"ddpm-train: failed: could not write pixel cache to {run}/data/train: "
        "[Errno 28] No space left on device",
    )
    assert not run.exists()


def _examples(count: int, value: int) -> tf.data.Dataset:
    images = np.full((count, 4, 4, 1), value, np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(count, np.int32)))


def test_a_pixel_cache_rebuilt_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    PixelCache.build(cache, _examples(10, 1), num_classes=None, source={"v": 1})
    before = _contents(cache)
    full = full_disk_open(builtins.open, "*/pixels.u8", 100)
    monkeypatch.setattr(builtins, "open", full)
    monkeypatch.setattr(io, "open", full)
    with pytest.raises(WriteError, match=rf"could not write pixel cache to {cache}: \[Errno 28\]"):
        PixelCache.build(cache, _examples(20, 2), num_classes=None, source={"v": 2})
    monkeypatch.undo()
    assert _contents(cache) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert PixelCache.reuse(cache, {"v": 1}).load().tolist() == np.full((10, 4, 4, 1), 1).tolist()


def _earlier(directory: Path, files: dict[str, bytes]) -> dict[str, bytes | None]:
    """Puts `files` in `directory` (what an earlier run wrote there; their bytes do not matter to
    a write that must not touch them) and returns its contents."""
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return _contents(directory)


def test_samples_that_cannot_be_written_leave_the_earlier_ones(trained_run, tmp_path):
    """ddpm-sample --overwrite on a disk that is full for the grid (written after the arrays):
    the earlier grid and arrays stay as they were, and no partial file is left."""
    out = tmp_path / "out"
    before = _earlier(out, {"samples.png": b"earlier grid", "samples.npz": b"earlier arrays"})
    args = [str(trained_run), "--out", str(out), "--num-samples", "2", "--method", "ddim"]
    proc = _faulty("enospc:*samples.png*:100", "ddpm-sample", *args, "--steps", "2", "--overwrite")
    _one_failure_line(
        proc,
        f"ddpm-sample: failed: could not write sample grid to {out}/samples.png: "
        "[Errno 28] No space left on device",
    )
    assert _contents(out) == before


def test_an_export_that_cannot_be_written_leaves_the_earlier_one(trained_run, tmp_path):
    """ddpm-export --overwrite where no file may grow past 100 kB (the SavedModel's variables are
    larger): the earlier export stays whole and no partial directory is left."""
    out = tmp_path / "export"
    before = _earlier(out, {"manifest.json": b"{}", "saved_model/saved_model.pb": b"earlier"})
    args = [str(trained_run), "--format", "saved_model", "--out", str(out), "--steps", "2"]
    proc = _faulty("fsize:100000", "ddpm-export", *args, "--overwrite")
    _one_failure_line(
        proc, f"ddpm-export: failed: could not write export to {out}: [Errno 27] File too large"
    )
    assert _contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
