"""likelihood.bits_per_dim: the batched exact bound, against the one-batch loop, compiled once."""

import numpy as np
import pytest

from ddpm_tf import GaussianDiffusion, get_beta_schedule, unet
from ddpm_tf.likelihood import _bound_loop, bits_per_dim, even_batch
from ddpm_tf.model import DiffusionModel
from ddpm_tf.pixels import scale_to_unit

T = 20


@pytest.fixture(scope="module")
def model():
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000)[:T])
    return DiffusionModel(unet.from_preset("tiny_8"), diffusion, seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)


def _direct(model, images, seed, batch):
    """The bound batch by batch through `calc_bpd_loop`, the last batch zero-padded to `batch`
    (the noise of a step is drawn for the whole batch, so a batch's shape is part of the draw)."""
    denoise, values = model.denoiser(), []
    for start in range(0, len(images), batch):
        x = scale_to_unit(images[start : start + batch]).numpy()
        keep = len(x)
        x = np.concatenate([x, np.zeros((batch - keep, *x.shape[1:]), np.float32)])
        out = model.diffusion.calc_bpd_loop(denoise, x, seed=seed)
        values.append(out["total_bpd"].numpy()[:keep])
    return np.concatenate(values)


def test_batches_with_a_padded_last_one_equal_the_one_batch_loop(model, images):
    report = bits_per_dim(model, images, batch_size=3, seed=5)  # batches of 3 and 2 (+1 padding)
    direct = _direct(model, images, seed=5, batch=3)
    assert report["num_examples"] == 5
    assert report["bpd"] == pytest.approx(direct.mean(), rel=1e-5)
    assert report["bpd_stderr"] == pytest.approx(direct.std(ddof=1) / np.sqrt(5), rel=1e-4)


def test_the_loop_is_compiled_once_and_follows_the_weights(model, images):
    """Repeated calls (a training run measuring every N steps) reuse one trace, never stale weights."""
    first = bits_per_dim(model, images, batch_size=5, seed=1)["bpd"]
    loop = _bound_loop(model, use_ema=True, jit_compile=False)
    traces = loop.experimental_get_tracing_count()
    rng = np.random.default_rng(0)  # the output layer starts at zero: move every weight
    for weight in model.ema_network.weights:
        weight.assign_add(0.05 * rng.standard_normal(weight.shape).astype(np.float32))
    second = bits_per_dim(model, images, batch_size=5, seed=1)["bpd"]
    assert loop.experimental_get_tracing_count() == traces
    assert second != pytest.approx(first, rel=1e-3)
    assert second == pytest.approx(_direct(model, images, seed=1, batch=5).mean(), rel=1e-5)


def test_bad_images_are_refused_before_any_work(model):
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, C\]"):
        bits_per_dim(model, np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        bits_per_dim(model, np.zeros((2, 8, 8, 1), np.uint8), batch_size=0)


def test_even_batches_are_as_few_as_allowed_with_the_least_padding():
    assert [even_batch(n, b) for n, b in [(300, 250), (1000, 256), (5, 3), (7, 7), (1, 250)]] == [
        150,
        250,
        3,
        7,
        1,
    ]
    for count in range(1, 200):
        for limit in range(1, 60):
            batch = even_batch(count, limit)
            batches = -(-count // batch)
            assert batch <= limit and batches == -(-count // limit)
            assert batches * batch - count < batches  # at most one padded row per batch
