"""Training on several workers (MultiWorkerMirroredStrategy): TF_CONFIG checks, the chief alone
writing the run directory, preemption by SIGTERM, and two worker processes on loopback that end at
the weights of one process.

The slow tests start each worker with the same command line, as on two hosts; only TF_CONFIG's
task index differs. Each worker also gets a working directory and a TMPDIR of its own, so that
anything a worker leaves behind is seen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL, checkpoint_values
from test_distributed import _free_port

from ddpm_tf import GaussianDiffusion, compat, get_beta_schedule, unet
from ddpm_tf.data import load_arrays
from ddpm_tf.distribute import ClusterConfigError, ClusterTask, PreemptionCheckpoint, cluster_task
from ddpm_tf.model import DiffusionModel
from ddpm_tf.runs import CURVE_FILE, RunDirectory
from ddpm_tf.training.ddpm_train import main as train_main
from ddpm_tf.training.ddpm_train_curve import read_curve

TWO_WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


def _tf_config(cluster: dict, kind: str = "worker", index: int = 0) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


# ------------------------------------------------------------------------------- TF_CONFIG
def test_cluster_task_reads_this_process_task():
    assert cluster_task({}) is None and cluster_task({"TF_CONFIG": " "}) is None
    assert cluster_task({"TF_CONFIG": _tf_config(TWO_WORKERS, index=1)}) == ClusterTask(
        "worker", 1, 2
    )
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    task = cluster_task({"TF_CONFIG": _tf_config(with_chief, "chief", 0)})
    assert task == ClusterTask("chief", 0, 3) and str(task) == "chief 0"


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{'cluster': 1}", "TF_CONFIG is not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "has no cluster"),
        (_tf_config({"worker": ["a:1"], "ps": ["b:1"]}), r"\['ps'\] tasks"),
        (_tf_config({"worker": ["a"]}), 'list of "host:port" strings'),
        (_tf_config({"chief": ["a:1", "b:1"]}, "chief"), "one chief only"),
        (_tf_config(TWO_WORKERS, index=2), r"is not a task of its cluster \(worker 0..1\)"),
        (_tf_config(TWO_WORKERS, "chief"), "is not a task of its cluster"),
        (json.dumps({"cluster": TWO_WORKERS}), "task None is not a task"),
    ],
)
def test_a_bad_tf_config_is_named(tf_config, message):
    with pytest.raises(ClusterConfigError, match=message):
        cluster_task({"TF_CONFIG": tf_config})


@pytest.mark.parametrize(
    ("tf_config", "strategy", "message"),
    [
        ("not json", "multi_worker", "TF_CONFIG is not valid JSON"),
        (json.dumps({"cluster": {}}), "multi_worker", "has no cluster"),
        (_tf_config(TWO_WORKERS, index=5), "multi_worker", "is not a task of its cluster"),
        (None, "multi_worker", "TF_CONFIG environment variable, which is not set"),
        (_tf_config(TWO_WORKERS), "default", "train.strategy=multi_worker"),
    ],
)
def test_train_refuses_a_bad_tf_config_before_writing(
    tmp_path, monkeypatch, capsys, tf_config, strategy, message
):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    run = tmp_path / "run"
    code = train_main(["--run-dir", str(run), f"train.strategy={strategy}", "train.steps=2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("ddpm-train: error: ") and message in lines[0]
    assert not run.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ what a non-chief writes
def _tiny_model() -> DiffusionModel:
    keras.utils.set_random_seed(0)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000)[:20])
    model = DiffusionModel(unet.from_preset("tiny_8", ch=16, num_groups=4), diffusion, seed=1)
    model.compile(keras.optimizers.Adam(1e-3))
    return model


def test_a_worker_other_than_the_chief_saves_to_a_temporary_directory_it_removes(
    tmp_path, monkeypatch
):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    model = _tiny_model()
    chief, other = RunDirectory(tmp_path / "run"), RunDirectory(tmp_path / "run", chief=False)
    other.open({"a": 1}, model)
    assert not (tmp_path / "run").exists()  # the chief alone creates the run directory
    chief.open({"a": 1}, model)
    chief.save(model)
    model.step_counter.assign(7)
    saved = Path(other.save(model))
    assert saved.name == "ckpt-7" and saved.parent.parent == scratch  # written there...
    assert list(scratch.iterdir()) == []  # ...and removed
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "checkpoint",
        "ckpt-0.data-00000-of-00001",
        "ckpt-0.index",
    ]
    assert other.restore(model) == 0  # it reads the chief's checkpoints


# -------------------------------------------------------------------------------- SIGTERM
def test_a_sigterm_saves_once_at_the_next_step_and_stops_fit(monkeypatch):
    """On one process (no cluster) TensorFlow's handler decides alone: the step after the signal."""
    asked = []
    util = compat._failure_handling_module().failure_handling_util
    spy = lambda: asked.append(1) or False
    monkeypatch.setattr(util, "on_gcp", spy)
    previous = signal.getsignal(signal.SIGTERM)
    saves = []
    try:
        callback = PreemptionCheckpoint(tf.distribute.get_strategy(), lambda: saves.append(1))
        callback.set_model(_tiny_model())
        callback.on_train_batch_end(0)
        assert not saves and not callback.model.stop_training
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # Python runs the handler between bytecodes of the main thread
        callback.on_train_batch_end(1)
        assert not saves  # the step to save at is the next one
        callback.on_train_batch_end(2)
        assert saves == [1] and callback.preempted and callback.model.stop_training
        callback.on_train_end()
        assert signal.getsignal(signal.SIGTERM) is previous  # SIGTERM does what it did before
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert asked == []  # the platform check that would ask GCE's metadata server was skipped
    assert util.on_gcp is spy  # and is in place again


# -------------------------------------------------------------------- two worker processes
STEPS, EVERY = 12, 5
# Small and quick: a checkpoint every 5 steps, one evaluation (at the end, without the exact
# bound, which is the chief's alone), no attention layer.
OVERRIDES = [
    *SMALL,
    "model.attn_resolutions=[]",
    f"train.steps={STEPS}",
    f"run.checkpoint_every={EVERY}",
    f"run.eval_every={STEPS}",
    "run.bpd_examples=0",
    "run.log_every=1",  # a curve row per step: the gradient norms before clipping are compared
]
# Two half-batch gradients summed by the all-reduce against one full-batch gradient: the same
# float32 sums in another order, so the weights, EMA and Adam moments agree to a float32 ulp or
# so (measured: 6e-8 here, 2.4e-7 after 24 steps). A wrong split of the batch or of its noise
# changes the gradients themselves (measured: 3.6e-2 with the workers' rows swapped).
BOUND = 1e-5
ENV = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
TIMEOUT = 240


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, data dir) of the same run in this process, on one device."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train_main(["--run-dir", str(run), "--data-dir", data_dir, *OVERRIDES]) == 0
    load_arrays("sklearn_digits", "test", data_dir=data_dir)  # prepared: workers only read it
    return run, data_dir


class Cluster:
    """Two worker processes of one command line, each with its own cwd, TMPDIR and log files."""

    def __init__(self, root: Path, run_dir: str, data_dir: str):
        self.root = root
        self.command = [
            sys.executable,
            "-m",
            "ddpm_tf.training",
            "--run-dir",
            run_dir,
            "--data-dir",
            data_dir,
            *OVERRIDES,
            "train.strategy=multi_worker",
        ]
        self.cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
        for index in range(2):
            for place in ("cwd", "tmp", "logs"):
                (root / f"worker{index}" / place).mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.pids: list[int] = []  # every process started, chief first in each launch

    def start(self) -> None:
        self.procs = []
        for index in range(2):
            home = self.root / f"worker{index}"
            env = ENV | {
                "TF_CONFIG": _tf_config(self.cluster, index=index),
                "TMPDIR": str(home / "tmp"),
            }
            launch = len(self.pids) // 2
            with (
                open(home / "logs" / f"out{launch}.txt", "w") as out,
                open(home / "logs" / f"err{launch}.txt", "w") as err,
            ):
                proc = subprocess.Popen(
                    self.command, cwd=home / "cwd", env=env, stdout=out, stderr=err
                )
            self.procs.append(proc)
            self.pids.append(proc.pid)

    def wait(self) -> list[int]:
        deadline = time.time() + TIMEOUT
        try:
            return [proc.wait(timeout=max(1, deadline - time.time())) for proc in self.procs]
        finally:
            self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def output(self, index: int, stream: str = "out") -> str:
        launch = len(self.pids) // 2 - 1
        return (self.root / f"worker{index}" / "logs" / f"{stream}{launch}.txt").read_text()

    def assert_done(self) -> None:
        """Both workers exit 0 and write nothing to stderr but the chief's decoding progress."""
        codes = self.wait()
        errors = [self.output(i, "err") for i in range(2)]
        chief = [line for line in errors[0].splitlines() if not line.startswith("decoding ")]
        assert codes == [0, 0] and chief == [] and errors[1] == "", [e[-2000:] for e in errors]

    def leftovers(self, index: int) -> list[str]:
        """What worker `index` left in its working directory and TMPDIR."""
        home = self.root / f"worker{index}"
        return [str(p.relative_to(home)) for d in ("cwd", "tmp") for p in (home / d).rglob("*")]


def _max_difference(a: Path, b: Path) -> float:
    left, right = checkpoint_values(a), checkpoint_values(b)
    assert left.keys() == right.keys()
    for name in left:
        if left[name].dtype.kind != "f":
            assert np.array_equal(left[name], right[name]), name  # counters, step
    return max(float(np.abs(left[n] - right[n]).max()) for n in left if left[n].dtype.kind == "f")


def _assert_same_gradient_norms(run: Path, single: Path) -> None:
    """The logged pre-clipping gradient norm of every step equals one process's: a gradient-scale
    error (e.g. a mean of per-worker means taken twice) is invisible in the weights while the clip
    is active, not here."""
    got, want = read_curve(run / CURVE_FILE), read_curve(single / CURVE_FILE)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    norms = [r["grad_norm"] for r in want]
    assert [r["grad_norm"] for r in got] == pytest.approx(norms, rel=1e-5)


def _files(run: Path) -> set[str]:
    """The run directory's files, less checkpoints and TensorBoard logs (whose names vary)."""
    skip = ("checkpoints", "logs")
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.parts[len(run.parts)] not in skip}


def _event_file_pids(run: Path) -> set[int]:
    # events.out.tfevents.<time>.<host>.<pid>.<n>.v2: the process that wrote it
    return {int(p.name.split(".")[-3]) for p in (run / "logs").rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_two_workers_end_at_the_weights_of_one_process_and_only_the_chief_writes(
    tmp_path, reference
):
    """Uninterrupted, with a relative --run-dir: each worker has a run directory of its own (which
    works for a fresh run, not for resuming)."""
    single, data_dir = reference
    cluster = Cluster(tmp_path, "run", data_dir)
    cluster.start()
    cluster.assert_done()
    run = tmp_path / "worker0" / "cwd" / "run"
    assert "(2 replicas)" in cluster.output(0) and f"done: step {STEPS}" in cluster.output(0)
    assert f"eval at step {STEPS}" in cluster.output(0)
    assert "worker 1 of 2 (not the chief" in cluster.output(1)
    assert "step 4/" not in cluster.output(1)  # progress is the chief's to print
    assert _max_difference(run, single) < BOUND
    _assert_same_gradient_norms(run, single)
    assert _files(run) == _files(single)
    assert _event_file_pids(run) == {cluster.pids[0]}
    assert [p for p in cluster.leftovers(0) if not p.startswith("cwd/run")] == []
    assert cluster.leftovers(1) == []  # no run directory, checkpoint, grid or temporary file

    # The same commands again cannot resume: worker 1 has no run directory to read.
    cluster.start()
    assert cluster.wait() == [2, 2]
    for index in range(2):
        assert "resuming needs one run directory that every worker reads" in cluster.output(
            index, "err"
        )
    assert cluster.leftovers(1) == []


@pytest.mark.slow
def test_a_sigterm_saves_a_checkpoint_on_every_worker_and_the_rerun_resumes_exactly(
    tmp_path, reference
):
    """A shared run directory; SIGTERM to the non-chief once the first checkpoint exists; the same
    two commands again finish the run at the weights of one uninterrupted process."""
    single, data_dir = reference
    shared = tmp_path / "shared" / "run"
    cluster = Cluster(tmp_path, str(shared), data_dir)
    cluster.start()
    deadline = time.time() + TIMEOUT
    try:
        while not (shared / "checkpoints" / f"ckpt-{EVERY}.index").exists():
            assert all(p.poll() is None for p in cluster.procs) and time.time() < deadline
            time.sleep(0.05)
        cluster.procs[1].send_signal(signal.SIGTERM)
    finally:
        codes = cluster.wait()
    errors = [cluster.output(i, "err").strip().splitlines() for i in range(2)]
    assert codes == [1, 1], errors
    stopped = [re.search(r"failed: stopped at step (\d+) after a SIGTERM", e[-1]) for e in errors]
    assert all(stopped), errors
    step = int(stopped[0][1])
    assert int(stopped[1][1]) == step and EVERY < step < STEPS
    # Saved for the SIGTERM: no regular checkpoint falls on that step.
    assert step % EVERY and tf.train.latest_checkpoint(shared / "checkpoints").endswith(f"-{step}")

    cluster.start()
    cluster.assert_done()
    assert all(f"resuming at step {step} of {STEPS}" in cluster.output(i) for i in range(2))
    assert _max_difference(shared, single) < BOUND
    _assert_same_gradient_norms(shared, single)
    assert _files(shared) == _files(single)
    assert _event_file_pids(shared) == {cluster.pids[0], cluster.pids[2]}  # the two chiefs
    assert cluster.leftovers(0) == [] and cluster.leftovers(1) == []
