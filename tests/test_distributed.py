"""Distribution strategies, each in fresh processes (logical devices and TF_CONFIG are per process)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(args, env=ENV, timeout=900) -> str:
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_mirrored_on_two_devices_makes_the_same_update_as_one_device():
    # One process per configuration: two MirroredStrategy instances in one process share
    # collective-op keys and trip over each other.
    results = {}
    for name in ("plain", "conditional_hybrid_importance", "distillation"):
        out = _run([str(SCRIPTS / "mirrored_vs_single.py"), name])
        results.update(json.loads(out.strip().splitlines()[-1]))
    for name, r in results.items():
        assert r["replicas"] == 2, name
        assert r["steps"] == [4, 4], name
        assert r["weights_moved"] > 1e-3, name  # training did change the weights...
        assert r["weights_max_diff"] < 1e-5, name  # ...identically on 1 and 2 devices
        assert r["ema_max_diff"] < 1e-5, name
        assert r["loss_single"] == pytest.approx(r["loss_mirrored"], rel=1e-5), name
    importance = results["conditional_hybrid_importance"]
    assert importance["history_max_diff"] < 1e-5 and importance["counts"] == [32, 32]
    distillation = results["distillation"]  # round 1's teacher: round 0's student, on both
    assert distillation["teacher_moved"] > 1e-4 and distillation["teacher_max_diff"] < 1e-5
    plain = results["plain"]
    assert plain["per_replica_shape"] == [4, 8, 8, 1]
    assert plain["replicas_differ"] > 0.1  # each replica sampled with its own seed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_mirrored_with_two_workers_on_loopback(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**ENV, "TF_CONFIG": json.dumps(config)}
        cmd = [sys.executable, str(SCRIPTS / "multi_worker.py"), str(tmp_path)]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            proc.kill()
    reports = [json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2)]
    assert all(r["replicas"] == 2 and r["steps"] == 4 for r in reports)
    assert reports[0]["digest"] == reports[1]["digest"]  # the workers hold the same weights
    assert all(0.1 < loss < 10 for r in reports for loss in r["loss"])
