"""The noise-aware classifier of classifier guidance: its layers, its training (exact resume, it
learns what the noise leaves), and `ddpm-classifier --noisy RUN_DIR`."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_weights

from ddpm_tf import GaussianDiffusion, get_beta_schedule
from ddpm_tf.data import step_batches
from ddpm_tf.errors import InputError
from ddpm_tf.guidance import NoisyClassifier, load_noisy_classifier, log_prob_gradient
from ddpm_tf.guidance.training import NoisyClassifierTraining
from ddpm_tf.layers import AttentionPool
from ddpm_tf.runs import RunDirectory
from ddpm_tf.training.ddpm_classifier import main as classifier_main

TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4)


def _tiny(num_classes=3, **overrides) -> NoisyClassifier:
    return NoisyClassifier(8, 1, num_classes, **{**TINY, **overrides})


def test_attention_pool_reads_the_mean_token_as_written():
    layer = AttentionPool(5, num_heads=2)
    x = np.random.default_rng(0).normal(size=(3, 2, 3, 4)).astype(np.float32)
    got = layer(x).numpy()
    tokens = x.reshape(3, 6, 4)
    tokens = np.concatenate([tokens.mean(1, keepdims=True), tokens], 1) + layer.position.numpy()
    kernel, bias = (w.numpy() for w in layer.qkv.weights)
    q, k, v = np.split(tokens @ kernel + bias, 3, axis=-1)
    heads = []
    for h in range(2):
        part = slice(2 * h, 2 * h + 2)
        logits = q[:, :1, part] @ k[:, :, part].transpose(0, 2, 1) / math.sqrt(2)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        heads.append((weights @ v[:, :, part])[:, 0])
    proj_kernel, proj_bias = (w.numpy() for w in layer.proj.weights)
    np.testing.assert_allclose(got, np.concatenate(heads, -1) @ proj_kernel + proj_bias, atol=1e-5)


def test_the_classifier_round_trips_and_depends_on_t(tmp_path):
    classifier = _tiny()
    draw = np.random.default_rng(2)  # weights off their zero init, so the blocks read t
    classifier.set_weights([0.2 * draw.normal(size=w.shape) for w in classifier.get_weights()])
    x = tf.random.normal((2, 8, 8, 1), seed=1)
    logits = classifier([x, tf.constant([0, 999])])
    assert logits.shape == (2, 3) and logits.dtype == tf.float32
    other_t = classifier([x, tf.constant([500, 10])])
    assert np.abs(logits.numpy() - other_t.numpy()).max() > 1e-4
    classifier.save(tmp_path / "c.keras")
    loaded = load_noisy_classifier(tmp_path / "c.keras")
    np.testing.assert_array_equal(loaded([x, tf.constant([0, 999])]).numpy(), logits.numpy())


def test_the_classifier_refuses_what_it_cannot_read():
    with pytest.raises(InputError, match="x_t` must have shape"):
        _tiny()([tf.zeros((1, 4, 4, 1)), tf.zeros((1,), tf.int32)])
    with pytest.raises(InputError, match="no noisy-classifier preset for 12x12"):
        NoisyClassifier.for_images((12, 12, 1), 3)
    with pytest.raises(InputError, match="num_classes` must be >= 2"):
        _tiny(num_classes=1)
    with pytest.raises(InputError, match="NoisyClassifier: `attn_resolutions`"):
        _tiny(attn_resolutions=(3,))


def _trainer(seed=0, dropout=0.0) -> NoisyClassifierTraining:
    keras.utils.set_random_seed(seed)
    trainer = NoisyClassifierTraining(
        _tiny(2, dropout=dropout), GaussianDiffusion(get_beta_schedule("linear", 1000)), seed=7
    )
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    trainer.optimizer.build(trainer.classifier.trainable_variables)
    return trainer


def _two_classes(n=512):
    """Class 0: images at +0.6, class 1 at -0.6, with a little pixel noise."""
    labels = np.arange(n) % 2
    pixels = np.where(labels == 0, 0.6, -0.6)[:, None, None, None]
    pixels = pixels + 0.1 * np.random.default_rng(0).normal(size=(n, 8, 8, 1))
    return np.round((np.clip(pixels, -1, 1) + 1) * 127.5).astype(np.uint8), labels.astype(np.int32)


def test_the_classifier_learns_what_the_noise_leaves():
    images, labels = _two_classes()
    trainer = _trainer()
    trainer.fit(step_batches(images, labels, batch_size=32, seed=0), steps_per_epoch=150, verbose=0)
    unit = images.astype(np.float32) / 127.5 - 1.0
    accuracy = trainer.accuracy_by_timestep(unit, labels, [0, 300, 999])
    assert accuracy[0] > 0.97 and accuracy[300] > 0.9, accuracy
    assert abs(accuracy[999] - 0.5) < 0.1, accuracy  # x_T holds nothing of x_0
    with pytest.raises(InputError, match=r"timesteps \[1000\] are outside"):
        trainer.accuracy_by_timestep(unit, labels, [1000])


def test_training_resumes_exactly_with_dropout(tmp_path):
    images, labels = _two_classes(128)

    def batches(start):
        return step_batches(images, labels, batch_size=16, seed=3, start_step=start)

    straight = _trainer(dropout=0.2)
    straight.fit(batches(0), steps_per_epoch=6, verbose=0)
    first = _trainer(dropout=0.2)
    first.fit(batches(0), steps_per_epoch=3, verbose=0)
    RunDirectory(tmp_path / "run").save(first)
    resumed = _trainer(seed=99, dropout=0.2)  # other initial weights, all restored
    assert RunDirectory(tmp_path / "run").restore(resumed) == 3
    resumed.fit(batches(3), steps_per_epoch=3, verbose=0)
    assert resumed.step == straight.step == 6
    assert_same_weights(resumed.classifier.weights, straight.classifier.weights)


def test_the_program_trains_resumes_and_reports(trained_run, data_dir, tmp_path, capsys):
    out = tmp_path / "noisy"
    common = ["--noisy", str(trained_run), "--data-dir", data_dir, "--out", str(out)]
    assert classifier_main([*common, "--steps", "6", "--checkpoint-every", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    accuracy = report["accuracy_by_timestep"]
    assert report["steps"] == 6 and "0" in accuracy and len(accuracy) == 9
    assert report["train_minutes"] > 0
    assert classifier_main([*common, "--steps", "8"]) == 0  # extends the run from step 6
    assert "resuming at step 6 of 8" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["steps"] == 8
    classifier = load_noisy_classifier(out)
    assert classifier.num_classes == 10 and classifier.image_size == 8
    assert classifier_main([*common, "--steps", "8", "--batch-size", "16"]) == 2  # another config


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "3"], "--epochs is the feature classifier's"),
        (["--dataset", "mnist"], "leave out --dataset"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_the_program_refuses_flags_of_the_other_mode(trained_run, tmp_path, capsys, args, message):
    assert classifier_main(["--noisy", str(trained_run), "--out", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_feature_mode_refuses_steps(tmp_path, capsys):
    out = str(tmp_path / "c.keras")
    assert classifier_main(["--dataset", "sklearn_digits", "--out", out, "--steps", "5"]) == 2
    assert "--steps is for --noisy" in capsys.readouterr().err


def test_a_sigterm_checkpoints_and_a_rerun_resumes(trained_run, data_dir, tmp_path, capsys):
    out = tmp_path / "noisy"
    argv = ["--noisy", str(trained_run), "--data-dir", data_dir, "--out", str(out)]
    argv += ["--steps", "400", "--checkpoint-every", "2"]

    def stop_after_the_first_checkpoint():
        while not list((out / "checkpoints").glob("ckpt-2.index")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_after_the_first_checkpoint, daemon=True).start()
    assert classifier_main(argv) == 1
    assert signal.getsignal(signal.SIGTERM) is previous
    err = capsys.readouterr().err
    stopped = int(re.search(r"stopped at step (\d+) after a SIGTERM", err).group(1))
    assert 2 <= stopped < 400 and (out / "checkpoints" / f"ckpt-{stopped}.index").exists()
    assert not (out / "classifier.keras").exists()
    assert classifier_main([*argv[:-4], "--steps", str(stopped + 2)]) == 0
    assert f"resuming at step {stopped} of {stopped + 2}" in capsys.readouterr().out


def test_the_gradient_under_mixed_float16_is_finite_and_close_to_float32(mixed_precision):
    half = _tiny()
    keras.mixed_precision.set_global_policy("float32")
    full = _tiny()
    draw = np.random.default_rng(5)
    weights = [0.2 * draw.normal(size=w.shape) for w in full.get_weights()]
    full.set_weights(weights)
    half.set_weights(weights)
    assert (
        half.compute_dtype == "float16"
        and half([tf.zeros((1, 8, 8, 1)), tf.zeros([1], tf.int32)]).dtype == tf.float32
    )
    x = tf.random.normal((4, 8, 8, 1), seed=3)
    t, labels = tf.constant([0, 10, 500, 999]), tf.constant([0, 1, 2, 1])
    g16 = log_prob_gradient(half, x, t, labels).numpy()
    g32 = log_prob_gradient(full, x, t, labels).numpy()
    assert np.isfinite(g16).all() and g16.dtype == np.float32
    assert np.abs(g16 - g32).max() < 0.02 * np.abs(g32).max()
