"""Classifier-free guidance: the mixing formula, conditional training with labels, guided sampling."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ddpm_tf import (
    DiffusionModel,
    GaussianDiffusion,
    data,
    every_class,
    from_preset,
    get_beta_schedule,
    guided_denoiser,
    rng,
)

NULL = 10


def fake_network(inputs, training=False):
    """Output = x_t + label (as a float), so each output is easy to predict by hand."""
    x, t, y = inputs
    label = tf.cast(tf.reshape(y, [-1, 1, 1, 1]), x.dtype)
    return x + label + 0.0 * tf.cast(tf.reshape(t, [-1, 1, 1, 1]), x.dtype)


def test_guidance_mixes_conditional_and_null_outputs():
    x = tf.random.normal((3, 2, 2, 1))
    t = tf.constant([1, 2, 3])
    labels = tf.constant([0, 4, 7])
    for scale in (0.0, 1.0, 3.5):
        out = guided_denoiser(fake_network, labels, scale, null_label=NULL)(x, t)
        uncond = x.numpy() + NULL
        cond = x.numpy() + labels.numpy().reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(
            out.numpy(), uncond + scale * (cond - uncond), rtol=1e-5, atol=1e-5
        )


def test_guidance_with_learned_variance_guides_only_the_mean():
    def two_part(inputs, training=False):
        mean = fake_network(inputs)
        y = tf.cast(tf.reshape(inputs[2], [-1, 1, 1, 1]), tf.float32)
        return tf.concat([mean, tf.zeros_like(mean) + y / 100.0], axis=-1)

    x = tf.zeros((2, 1, 1, 1))
    labels = tf.constant([2, 3])
    out = guided_denoiser(two_part, labels, 2.0, null_label=NULL, learns_variance=True)(
        x, tf.constant([0, 0])
    )
    np.testing.assert_allclose(out.numpy()[..., 0].ravel(), NULL + 2.0 * (np.array([2, 3]) - NULL))
    np.testing.assert_allclose(
        out.numpy()[..., 1].ravel(), [0.02, 0.03], rtol=1e-6
    )  # conditional variance


@pytest.fixture(scope="module")
def conditional_model():
    keras.utils.set_random_seed(0)
    model = DiffusionModel(
        from_preset("tiny_8", num_classes=10),
        GaussianDiffusion(get_beta_schedule("linear", 1000)[:100]),
        label_dropout=0.2,
    )
    model.compile(keras.optimizers.Adam(1e-3))
    with tfds.testing.mock_data(num_examples=32):
        ds = data.load_images(
            "mnist", batch_size=16, image_size=8, label_key="label", download=True
        )
        history = model.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    return model


@pytest.mark.parametrize("method", ["ddim", "dpm_solver++"])
def test_guided_sampling(conditional_model, method):
    model = conditional_model
    labels = [1, 2, 3]
    plain = model.generate(labels=labels, seed=4, method=method, steps=5)  # scale 1: no null half
    sampler = model.sampler(method=method, steps=5)
    unit = sampler.sample_conditional(tf.constant(labels), rng.as_seed(4), tf.constant(1.0))
    strong = model.generate(labels=labels, seed=4, method=method, steps=5, guidance_scale=4.0)
    assert plain.shape == (3, 8, 8, 1)
    assert sampler.sample_labels.experimental_get_tracing_count() == 1  # what generate ran
    np.testing.assert_allclose(unit.numpy(), plain.numpy(), atol=1e-5)
    assert np.abs(strong.numpy() - plain.numpy()).max() > 1e-4
    unconditional = model.generate(3, seed=4, method=method, steps=5)  # the null class
    null = model.generate(labels=[NULL] * 3, seed=4, method=method, steps=5)
    np.testing.assert_allclose(unconditional.numpy(), null.numpy(), atol=1e-5)


def test_label_errors(conditional_model):
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 11\)"):
        conditional_model.generate(labels=[11], seed=0)
    with pytest.raises(ValueError, match="must yield \\(images, labels\\)"):
        conditional_model.fit(np.zeros((4, 8, 8, 1), np.float32), batch_size=4, verbose=0)


@pytest.mark.parametrize(("num_samples", "num_classes"), [(25, 10), (7, 3), (2, 5), (0, 4)])
def test_every_class_draws_each_class_equally_often(num_samples, num_classes):
    labels = every_class(num_samples, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    assert labels.dtype == np.int32 and len(labels) == num_samples
    assert counts.max() - counts.min() <= (1 if num_samples else 0) and counts.sum() == num_samples
    assert list(labels[:num_classes]) == list(range(min(num_samples, num_classes)))  # in turn
    assert every_class(num_samples, None) is None  # an unconditional model takes no labels
