"""Shared test set-up: quiet TensorFlow logs, float32 default policy, and a small Gaussian oracle."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # a crashing program subprocess shows its stack

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
