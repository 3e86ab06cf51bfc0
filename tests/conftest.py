"""Shared test set-up: quiet TensorFlow logs, float32 default policy, and a small Gaussian oracle."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # a crashing program subprocess shows its stack
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per op per xdist worker (and its subprocesses): the workers already fill the cores, and
    # TensorFlow's own thread pools on top of them oversubscribe the machine (about 13% slower on 2 cores).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# The package first, before TensorFlow loads: it sets TF_ENABLE_ONEDNN_OPTS as measured on this
# CPU (ddpm_tf.onednn). Every program a test starts inherits that setting, or with TensorFlow's
# default chosen DDPM_TF_TUNE=0, so that no subprocess measures again (whatever its cache folder)
# and all of them compute as this process does.
import ddpm_tf  # noqa: E402, F401
from ddpm_tf import onednn  # noqa: E402

os.environ.setdefault(onednn.TUNE_ENV, "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def np_rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mixed_precision():
    """The mixed_float16 global policy for one test, restored to float32 afterwards."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A tfds data directory holding the embedded digits (`sklearn_digits`), built once per module."""
    from ddpm_tf.data import image_shape

    path = str(tmp_path_factory.mktemp("tfds"))
    image_shape("sklearn_digits", path)  # built here, so no test's stderr holds tfds' progress bars
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """A ddpm-train run of 8 steps of `helpers.SMALL` (checkpoints at 4 and 8), once per module."""
    from helpers import SMALL

    from ddpm_tf.training.ddpm_train import main as train_main

    run = tmp_path_factory.mktemp("trained") / "run"
    assert train_main(["--run-dir", str(run), "--data-dir", data_dir, *SMALL, "train.steps=8"]) == 0
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of `trained_run` for one test to change."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy
