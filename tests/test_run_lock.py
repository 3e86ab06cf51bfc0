"""One writer per run directory: a second trainer is refused, a killed one blocks nothing, and
readers load a run that is being trained."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf
from helpers import SMALL
from test_training import _cli

from ddpm_tf.runlock import RunLockedError, holder, run_lock
from ddpm_tf.runs import load_model
from ddpm_tf.training.ddpm_sample import main as sample_main
from ddpm_tf.training.ddpm_train import main as train_main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Takes the lock of the directory argv[1] through the module, says so, and holds it until killed.
HOLD = """
import sys, time
from ddpm_tf.runlock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold(directory: Path) -> subprocess.Popen:
    """A process holding the lock of `directory` (it has taken it when this returns)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline() == "locked\n", proc.communicate()
    return proc


def _snapshot(directory: Path) -> dict[str, tuple]:
    """Every entry under `directory`: its modification time, and a file's bytes."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.is_dir() or p.read_bytes())
        for p in sorted([directory, *directory.rglob("*")])
    }


def test_a_second_trainer_is_refused_before_it_changes_anything(run_copy, data_dir, tmp_path):
    proc = _hold(run_copy)
    try:
        before = _snapshot(run_copy)
        time.sleep(0.01)  # a rewrite after this would show in the modification times
        refused = subprocess.run(
            _cli(run_copy, data_dir, steps=12), capture_output=True, text=True, env=ENV, timeout=120
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.startswith(
            f"ddpm-train: error: run directory {run_copy} is being trained by process {proc.pid} "
            f"on host {socket.gethostname()} (started "
        )
        assert refused.stderr.endswith("; wait for it or stop it.\n")
        assert refused.stderr.count("\n") == 1 and refused.stdout == ""
        assert _snapshot(run_copy) == before

        # readers take no lock: they load the run while it is held
        assert load_model(run_copy).step == 8
        out = tmp_path / "samples"
        sampled = [str(run_copy), "--out", str(out), "--num-samples", "2", "--method", "ddim"]
        assert sample_main([*sampled, "--steps", "2"]) == 0
        assert (out / "samples.npz").is_file()
        assert _snapshot(run_copy) == before
    finally:
        proc.kill()
        proc.wait()


def test_one_process_cannot_take_the_lock_twice(tmp_path):
    with run_lock(tmp_path / "new") as path:
        assert holder(tmp_path / "new")["pid"] == os.getpid()
        with (
            pytest.raises(RunLockedError, match=f"process {os.getpid()} on host"),
            run_lock(tmp_path / "new"),
        ):
            pass
        assert path.exists()
    with run_lock(tmp_path / "new"):  # released
        pass


def test_a_killed_holder_blocks_no_trainer_and_readers_load_while_it_trains(
    run_copy, data_dir, capsys
):
    """The lock file of a SIGKILLed holder stays but blocks nothing; while the new trainer saves
    after every step, keeping one checkpoint (each save deletes the one before), every load gets a
    complete checkpoint, newer as the run goes on, and a second trainer is refused."""
    proc = _hold(run_copy)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert holder(run_copy)["pid"] == proc.pid  # the killed holder's file is still there
    args = [*_cli(run_copy, data_dir, steps=100_000), "run.checkpoint_every=1", "run.keep=1"]
    args += ["run.log_every=100000", "run.eval_every=100000"]
    trainer = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.time() + 120
        while (tf.train.latest_checkpoint(run_copy / "checkpoints") or "").endswith("ckpt-8"):
            assert trainer.poll() is None and time.time() < deadline, trainer.communicate()
            time.sleep(0.1)
        assert holder(run_copy)["pid"] == trainer.pid
        assert holder(run_copy)["command"].startswith("python -m ddpm_tf.training --run-dir ")
        assert train_main(["--run-dir", str(run_copy), "--data-dir", data_dir, *SMALL]) == 2
        assert f"is being trained by process {trainer.pid}" in capsys.readouterr().err
        steps = [load_model(run_copy).step for _ in range(3)]
        assert trainer.poll() is None, trainer.communicate()
        assert steps == sorted(steps) and steps[0] > 8 and steps[-1] > steps[0], steps
    finally:
        trainer.send_signal(signal.SIGTERM)  # it saves its step and stops (exit code 1)
        out, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 1, err
    assert b"resuming at step 8" in out
    assert holder(run_copy) is None  # the trainer removed its lock file on exit


def _record(checkpoints: Path, latest: str) -> None:
    """Writes the state file as CheckpointManager does (a text proto, renamed into place)."""
    scratch = checkpoints / "checkpoint.tmp"
    scratch.write_text(
        f'model_checkpoint_path: "{latest}"\n'
        'all_model_checkpoint_paths: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-8"\n'
    )
    os.replace(scratch, checkpoints / "checkpoint")


def test_a_reader_reads_the_newer_checkpoint_when_the_one_it_read_is_deleted(run_copy, monkeypatch):
    """What a trainer does between a reader's look at the state file and its restore: it records
    a newer checkpoint, then deletes the older one (`run.keep`). The reader loads the newer."""
    checkpoints = run_copy / "checkpoints"
    _record(checkpoints, "ckpt-4")
    assert load_model(run_copy).step == 4
    restore = tf.train.Checkpoint.restore

    def trainer_saves_then_restore(self, path, *args, **kwargs):
        if path.endswith("ckpt-4") and (checkpoints / "ckpt-4.index").exists():
            _record(checkpoints, "ckpt-8")
            for old in checkpoints.glob("ckpt-4.*"):
                old.unlink()
        return restore(self, path, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "restore", trainer_saves_then_restore)
    assert load_model(run_copy).step == 8
