"""What several test modules share: the small training run, weight assertions, fresh processes."""

from pathlib import Path

import numpy as np

# A small, fast run of ddpm-train on the embedded digits: a narrow U-Net and a short schedule.
SMALL = [
    "model.ch=16",
    "model.dropout=0.1",  # the resume and replica tests then cover the dropout masks
    "diffusion.num_timesteps=50",
    "train.batch_size=16",
    "train.warmup_steps=2",
    "run.log_every=4",
    "run.checkpoint_every=4",
    "run.sample_every=1000",
    "run.eval_every=8",
    "run.eval_batches=1",
    "run.num_samples=0",  # no sample grids: 8 s of tracing per run; tests that need one ask
    "sampling.steps=5",
]


def assert_same_weights(a: list, b: list, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Asserts two lists of weight arrays match (exactly by default)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def weight_distance(a: list, b: list) -> float:
    """Euclidean distance between two lists of weight arrays, as one flat vector."""
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def run_script(script: str, *args: str, env: dict | None = None, cwd=None) -> dict:
    """Runs a Python script in a fresh process (TensorFlow not yet initialised there) and returns
    the JSON object it prints on its last line of stdout."""
    import json
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    environment.update({"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def program_modules() -> dict:
    """Each console script of the package and the module that implements it."""
    import importlib
    import importlib.metadata

    scripts = importlib.metadata.distribution("ddpm-tf").entry_points.select(
        group="console_scripts"
    )
    return {script.name: importlib.import_module(script.module) for script in scripts}


def steering_classifier():
    """A small `NoisyClassifier` of 8x8 images, 3 classes, its weights drawn off their zero init
    (so its gradient steers), the same at every call."""
    import keras

    from ddpm_tf.guidance import NoisyClassifier

    keras.utils.set_random_seed(1)
    classifier = NoisyClassifier(
        8, 1, 3, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4
    )
    draw = np.random.default_rng(4)
    classifier.set_weights([0.3 * draw.normal(size=w.shape) for w in classifier.get_weights()])
    return classifier


def checkpoint_values(run_dir) -> dict:
    """Every variable of the newest checkpoint of a run directory (model, EMA, optimizer,
    counters, sampler state) by name."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(Path(run_dir) / "checkpoints")
    reader = tf.train.load_checkpoint(latest)
    names = [n for n, _ in tf.train.list_variables(latest) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    return {n: reader.get_tensor(n) for n in names if "save_counter" not in n}


def assert_same_checkpoints(a, b) -> None:
    """The newest checkpoints of two run directories hold the same values, bit for bit."""
    left, right = checkpoint_values(a), checkpoint_values(b)
    assert left.keys() == right.keys()
    differing = [n for n in left if not np.array_equal(left[n], right[n])]
    assert not differing, f"{len(differing)} variables differ, e.g. {differing[:3]}"
