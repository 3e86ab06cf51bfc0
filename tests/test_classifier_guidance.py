"""Classifier guidance against exact answers: labelled Gaussian-mixture data (tests/oracle.py),
whose noisy class posterior p(y | x_t) and denoiser are closed forms.

- The score of p(x_t | y) is the score of p(x_t) plus grad log p(y | x_t), so with both exact the
  ODE samplers guided at scale 1 follow the exact class-conditional denoiser's trajectories, and
  every method samples p(x | y): its moments within a few standard errors.
- Scale S > 1 sharpens toward p(x) p(y | x)^S: the samples move away from the other classes.

Then the compiled samplers of `DiffusionModel.generate` with a `NoisyClassifier`: reproducible,
the same in graph and XLA, scale 0 equal to no guidance, and classifier-free guidance beside it.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import steering_classifier
from oracle import GaussianMixture

from ddpm_tf import (
    DiffusionModel,
    GaussianDiffusion,
    SamplingSpec,
    from_preset,
    get_beta_schedule,
    rng,
)
from ddpm_tf.errors import InputError
from ddpm_tf.guidance import ClassifierGuidance, NoisyClassifier
from ddpm_tf.sampling import Hooks, run_loop

T, N, LABEL = 1000, 4000, 0
MEANS, STDS, WEIGHTS = [[-0.5, 0.3], [0.4, -0.2]], [0.25, 0.35], [0.3, 0.7]
# Steps at which each method's discretisation error is well below the tolerance (unguided too).
STEPS = {"ancestral": 250, "ddim": 200, "dpm_solver++": 20, "unipc": 20}


@pytest.fixture(scope="module")
def mixture() -> tuple[GaussianDiffusion, GaussianMixture]:
    process = GaussianDiffusion(get_beta_schedule("linear", T))
    return process, GaussianMixture(process.alphas_cumprod, MEANS, STDS, WEIGHTS)


def _guided(process, mixture, method, scale, *, steps=None, noise=None, seed=3, dtype=None):
    hooks = Hooks(guide=ClassifierGuidance(mixture.classifier, tf.fill([N], LABEL), scale))
    spec = SamplingSpec(method, steps or STEPS[method], clip_denoised=False)
    shape = (N, 1, 1, 2) if noise is None else noise.shape
    out = run_loop(process, mixture.denoiser(), shape, seed, spec, noise=noise, hooks=hooks)
    return out["sample"].numpy().reshape(len(out["sample"]), 2)


@pytest.mark.parametrize("method", ["ddim", "dpm_solver++", "unipc"])
def test_the_guided_ode_follows_the_exact_conditional_denoiser(method):
    process = GaussianDiffusion(get_beta_schedule("linear", T), dtype="float64")
    mixture = GaussianMixture(process.alphas_cumprod, MEANS, STDS, WEIGHTS)
    x_T = tf.constant(np.random.default_rng(1).normal(size=(N, 1, 1, 2)))
    spec = SamplingSpec(method, 10, clip_denoised=False)
    guided = _guided(process, mixture, method, 1.0, steps=10, noise=x_T)
    exact = run_loop(process, mixture.denoiser(LABEL), x_T.shape, 0, spec, noise=x_T)["sample"]
    np.testing.assert_allclose(guided, exact.numpy().reshape(N, 2), atol=1e-9)
    unguided = run_loop(process, mixture.denoiser(), x_T.shape, 0, spec, noise=x_T)["sample"]
    assert np.abs(guided - unguided.numpy().reshape(N, 2)).max() > 0.1


@pytest.mark.parametrize("method", sorted(STEPS))
def test_scale_one_samples_the_class_conditional_distribution(method, mixture):
    x = _guided(*mixture, method, 1.0)
    mean, std = np.asarray(MEANS[LABEL]), STDS[LABEL]
    standard_error = std / math.sqrt(N)
    assert np.abs(x.mean(0) - mean).max() < 4 * standard_error + 0.005, x.mean(0)
    assert np.abs(x.std(0) / std - 1.0).max() < 0.04, x.std(0)
    unguided_share = WEIGHTS[LABEL]  # what the unguided model gives class LABEL
    expected = mixture[1].posterior(mean + std * np.random.default_rng(0).normal(size=(N, 2)))
    got = mixture[1].posterior(x)[:, LABEL].mean()
    assert abs(got - expected[:, LABEL].mean()) < 0.02 and got > unguided_share + 0.4


def _tilted_moments(mixture: GaussianMixture, scale: float) -> tuple[np.ndarray, float]:
    """Mean and p(y | x) of p(x) p(y | x)^scale by importance weights on draws of p(x)."""
    x, _ = mixture.sample(400_000, np.random.default_rng(5))
    share = mixture.posterior(x)[:, LABEL]
    w = share**scale
    return (w[:, None] * x).sum(0) / w.sum(), float((w * share).sum() / w.sum())


@pytest.mark.parametrize("method", ["ancestral", "dpm_solver++"])
def test_larger_scales_move_the_samples_as_the_tilted_distribution_says(method, mixture):
    process, mix = mixture
    means, shares = {}, {}
    for scale in (1.0, 2.0, 4.0):
        x = _guided(process, mix, method, scale)
        means[scale], shares[scale] = x.mean(0), mix.posterior(x)[:, LABEL].mean()
        target_mean, target_share = _tilted_moments(mix, scale)
        if scale > 1:  # the way the mean moves: toward the tilted distribution's, away from 1's
            moved, wanted = means[scale] - means[1.0], target_mean - _tilted_moments(mix, 1.0)[0]
            assert moved @ wanted / (np.linalg.norm(moved) * np.linalg.norm(wanted)) > 0.95
            assert shares[scale] > shares[scale / 2] and target_share > shares[1.0]


# --- the compiled samplers of DiffusionModel.generate, with a (small, untrained) NoisyClassifier


def _model(num_classes=None) -> DiffusionModel:
    keras.utils.set_random_seed(0)
    network = from_preset("tiny_8", ch=16, num_groups=4, num_classes=num_classes)
    draw = np.random.default_rng(3)  # off the zero init, so the output depends on its inputs
    network.set_weights([0.05 * draw.normal(size=w.shape) for w in network.get_weights()])
    return DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", 40)))


@pytest.fixture(scope="module")
def classifier() -> NoisyClassifier:
    return steering_classifier()


LABELS = [0, 1, 2, 1]


@pytest.mark.parametrize("method", ["ancestral", "dpm_solver++"])
def test_generate_is_steered_reproducibly_in_graph_and_xla(method, classifier):
    model = _model()
    settings = dict(method=method, steps=8, labels=LABELS, classifier=classifier)
    settings["clip_denoised"] = False  # the random network saturates clipped samples at +-1
    guided = model.generate(seed=5, classifier_scale=3.0, **settings).numpy()
    assert np.array_equal(guided, model.generate(seed=5, classifier_scale=3.0, **settings).numpy())
    xla = model.generate(seed=5, classifier_scale=3.0, jit_compile=True, **settings).numpy()
    np.testing.assert_allclose(xla, guided, rtol=1e-5, atol=1e-4)
    unguided = model.generate(len(LABELS), seed=5, method=method, steps=8, clip_denoised=False)
    unguided = unguided.numpy()
    at_zero = model.generate(seed=5, classifier_scale=0.0, **settings).numpy()
    np.testing.assert_allclose(at_zero, unguided, rtol=1e-5, atol=1e-5)  # float rounding alone
    assert np.abs(guided - unguided).max() > 1e-3
    assert not np.array_equal(model.generate(seed=6, classifier_scale=3.0, **settings), guided)


def test_a_conditional_model_combines_both_guidances(classifier):
    model = _model(num_classes=3)
    sampler = model.sampler(method="ddim", steps=6, classifier=classifier)
    labels, seed = tf.constant(LABELS), rng.as_seed(2)
    scale = tf.constant(2.0)
    for cfg in (0.0, 1.0):  # one network call per image, equal to the doubled batch's mix
        once = model.generate(
            seed=seed,
            labels=LABELS,
            guidance_scale=cfg,
            classifier=classifier,
            classifier_scale=2.0,
            method="ddim",
            steps=6,
        )
        doubled = sampler.sample_guided(labels, seed, tf.constant(cfg), scale)
        np.testing.assert_allclose(once.numpy(), doubled.numpy(), atol=1e-5)
    null = sampler.sample_classifier_guided(labels, tf.fill([4], 3), seed, tf.constant(0.0))
    np.testing.assert_array_equal(
        null, model.generate(labels=[3] * 4, seed=seed, method="ddim", steps=6)
    )
    both = sampler.sample_guided(labels, seed, tf.constant(3.0), scale)
    assert np.abs(both.numpy() - doubled.numpy()).max() > 1e-3


def test_bad_guidance_inputs_are_named(classifier):
    model = _model()
    with pytest.raises(InputError, match="needs `labels`"):
        model.generate(4, classifier=classifier)
    with pytest.raises(InputError, match=r"must lie in \[0, 3\)"):
        model.generate(labels=[0, 3], classifier=classifier)
    with pytest.raises(InputError, match="unconditional network cannot"):
        model.generate(labels=[0], classifier=classifier, guidance_scale=2.0)
    with pytest.raises(InputError, match="classifier_scale"):
        model.generate(labels=[0], classifier=classifier, classifier_scale=-1.0)
    wide = NoisyClassifier.for_images((28, 28, 1), 3)
    with pytest.raises(InputError, match=r"cannot read this model's \(8, 8, 1\) images"):
        model.generate(labels=[0], classifier=wide)
