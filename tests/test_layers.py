"""Tests for the U-Net building blocks in ddpm_tf.layers."""

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from ddpm_tf.layers import (
    AttentionBlock,
    Downsample,
    ResidualBlock,
    TimestepEmbedding,
    Upsample,
)

BATCH = 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


def perturb_weights(layer: keras.layers.Layer, scale: float = 0.1, seed: int = 1) -> None:
    """Add noise to every weight so zero-initialised kernels take part in the output."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        noise = rng.normal(0.0, scale, size=weight.shape).astype(weight.dtype)
        weight.assign(weight.numpy() + noise)


@dataclass
class Case:
    """A layer factory, the per-example input specs (shape, dtype) and the output shape."""

    make: Callable[[], keras.layers.Layer]
    inputs: list[tuple[tuple[int, ...], str]]
    output: tuple[int, ...]

    def arrays(self, batch: int = BATCH, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        out = []
        for shape, dtype in self.inputs:
            if dtype == "int32":
                out.append(rng.integers(0, 1000, size=(batch, *shape)).astype("int32"))
            else:
                out.append(rng.normal(size=(batch, *shape)).astype("float32"))
        return out


CASES = {
    "timestep_embedding": Case(lambda: TimestepEmbedding(9), [((), "int32")], (9,)),
    "residual_block": Case(
        lambda: ResidualBlock(16, num_groups=4, dropout=0.1),
        [((8, 8, 8), "float32"), ((12,), "float32")],
        (8, 8, 16),
    ),
    "residual_block_scale_shift": Case(
        lambda: ResidualBlock(8, num_groups=4, use_scale_shift_norm=True),
        [((8, 8, 8), "float32"), ((12,), "float32")],
        (8, 8, 8),
    ),
    "attention_block": Case(
        lambda: AttentionBlock(num_heads=2, num_groups=4), [((4, 4, 8), "float32")], (4, 4, 8)
    ),
    "downsample_conv": Case(lambda: Downsample(True), [((8, 8, 4), "float32")], (4, 4, 4)),
    "downsample_pool": Case(lambda: Downsample(False), [((8, 8, 4), "float32")], (4, 4, 4)),
    "upsample_conv": Case(lambda: Upsample(True), [((4, 4, 4), "float32")], (8, 8, 4)),
    "upsample_nearest": Case(lambda: Upsample(False), [((4, 4, 4), "float32")], (8, 8, 4)),
}


def reference_timestep_embedding(t: np.ndarray, dim: int, max_period: float) -> np.ndarray:
    half = dim // 2
    freqs = np.exp(-np.log(max_period) * np.arange(half) / (half - 1))
    args = np.asarray(t, np.float64)[:, None] * freqs[None, :]
    emb = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    return np.pad(emb, ((0, 0), (0, dim % 2)))


def reference_group_norm(x: np.ndarray, groups: int, gamma, beta, eps: float = 1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def reference_attention(layer: AttentionBlock, x: np.ndarray) -> np.ndarray:
    """Multi-head self-attention over the H*W positions, in float64 NumPy."""
    x = x.astype(np.float64)
    b, height, width, c = x.shape
    heads, d = layer.num_heads, c // layer.num_heads
    h = reference_group_norm(x, layer.num_groups, *layer.norm.get_weights()).reshape(b, -1, c)

    def project(dense):
        kernel, bias = dense.get_weights()
        return h @ kernel + bias

    def split(a):
        return a.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(project(dense)) for dense in (layer.q, layer.k, layer.v))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, -1, c)
    kernel, bias = layer.proj.get_weights()
    return x + (out @ kernel + bias).reshape(b, height, width, c)


# --- generic layer behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_output_shape(name: str) -> None:
    case = CASES[name]
    out = case.make()(*case.arrays())
    assert tuple(out.shape) == (BATCH, *case.output)


@pytest.mark.parametrize("name", CASES)
def test_config_round_trip(name: str) -> None:
    layer = CASES[name].make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", CASES)
def test_keras_file_round_trip(name: str, tmp_path) -> None:
    case = CASES[name]
    layer = case.make()
    inputs = [keras.Input(shape, dtype=dtype) for shape, dtype in case.inputs]
    model = keras.Model(inputs, layer(*inputs))
    perturb_weights(model)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    arrays = case.arrays(batch=3)
    assert isinstance(loaded.layers[-1], type(layer))
    np.testing.assert_array_equal(loaded(arrays), model(arrays))


@pytest.mark.parametrize("name", CASES)
def test_mixed_precision_output_dtype(name: str, mixed_precision) -> None:
    case = CASES[name]
    out = case.make()(*case.arrays())
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.isfinite(np.asarray(out, np.float32)).all()


# --- TimestepEmbedding ----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [8, 9, 128])
@pytest.mark.parametrize("max_period", [10000.0, 100.0])
def test_timestep_embedding_matches_numpy(dim: int, max_period: float) -> None:
    t = np.array([0, 1, 7, 250, 999], dtype="int32")
    out = TimestepEmbedding(dim, max_period=max_period)(t)
    expected = reference_timestep_embedding(t, dim, max_period)
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-4)


def test_timestep_embedding_accepts_float_timesteps() -> None:
    t = np.array([0.5, 123.25], dtype="float32")
    out = TimestepEmbedding(16)(t)
    np.testing.assert_allclose(np.asarray(out), reference_timestep_embedding(t, 16, 1e4), atol=1e-4)


def test_timestep_embedding_keeps_float32_precision_under_mixed_policy(mixed_precision) -> None:
    t = np.array([999.25], dtype="float32")  # not representable in float16
    out = np.asarray(TimestepEmbedding(8)(t), np.float32)
    np.testing.assert_allclose(out, reference_timestep_embedding(t, 8, 1e4), atol=2e-3)


def test_timestep_embedding_rejects_small_dim() -> None:
    with pytest.raises(ValueError, match="`dim`.*received 3"):
        TimestepEmbedding(3)


# --- ResidualBlock --------------------------------------------------------------------------


def _block_inputs(channels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(BATCH, 8, 8, channels)).astype("float32"), rng.normal(
        size=(BATCH, 12)
    ).astype("float32")


def _copy_weights(src: keras.layers.Layer, dst: keras.layers.Layer) -> None:
    dst.set_weights(src.get_weights())


@pytest.mark.parametrize("scale_shift", [False, True])
def test_residual_block_depends_on_timestep(scale_shift: bool) -> None:
    x, _ = _block_inputs()
    embed = TimestepEmbedding(12)
    block = ResidualBlock(16, num_groups=4, use_scale_shift_norm=scale_shift)
    block(x, embed(np.array([1, 1], "int32")))
    perturb_weights(block)
    early = block(x, embed(np.array([10, 10], "int32")))
    late = block(x, embed(np.array([900, 900], "int32")))
    assert np.abs(np.asarray(early) - np.asarray(late)).max() > 1e-3


def _zero_projection(block: ResidualBlock, bias: np.ndarray | None = None) -> None:
    kernel, old_bias = block.temb_proj.get_weights()
    block.temb_proj.set_weights(
        [np.zeros_like(kernel), np.zeros_like(old_bias) if bias is None else bias]
    )


def test_scale_shift_equals_additive_without_embedding_and_differs_with_it() -> None:
    x, temb = _block_inputs()
    additive = ResidualBlock(8, num_groups=4)
    scale_shift = ResidualBlock(8, num_groups=4, use_scale_shift_norm=True)
    additive(x, temb)
    scale_shift(x, temb)
    perturb_weights(additive)
    perturb_weights(scale_shift)
    for name in ("norm1", "conv1", "norm2", "conv2"):
        _copy_weights(getattr(additive, name), getattr(scale_shift, name))
    assert np.abs(np.asarray(additive(x, temb)) - np.asarray(scale_shift(x, temb))).max() > 1e-3

    _zero_projection(additive)
    _zero_projection(scale_shift)
    np.testing.assert_allclose(additive(x, temb), scale_shift(x, temb), atol=1e-5)


def test_scale_shift_uses_one_plus_scale() -> None:
    """scale = -1, shift = 0 zeroes GroupNorm(h), leaving x + conv2(SiLU(0)) = x + bias."""
    x, temb = _block_inputs()
    block = ResidualBlock(8, num_groups=4, use_scale_shift_norm=True)
    block(x, temb)
    perturb_weights(block)
    _zero_projection(block, bias=np.concatenate([-np.ones(8), np.zeros(8)]).astype("float32"))
    expected = x + block.conv2.get_weights()[1]
    np.testing.assert_allclose(block(x, temb), expected, atol=1e-5)


def test_residual_block_dropout_only_in_training() -> None:
    x, temb = _block_inputs()
    block = ResidualBlock(8, num_groups=4, dropout=0.5)
    block(x, temb)
    perturb_weights(block)
    inference = [np.asarray(block(x, temb, training=False)) for _ in range(2)]
    train = [np.asarray(block(x, temb, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    np.testing.assert_array_equal(inference[0], block(x, temb))
    assert np.abs(train[0] - train[1]).max() > 1e-3
    assert np.abs(train[0] - inference[0]).max() > 1e-3


def test_residual_block_skip_projection_only_when_channels_change() -> None:
    x, temb = _block_inputs(channels=8)
    same = ResidualBlock(8, num_groups=4)
    wider = ResidualBlock(16, num_groups=4)
    same(x, temb)
    wider(x, temb)
    assert same.skip is None
    assert wider.skip is not None
    # Zero-initialised last convolution: a fresh block reduces to its skip path.
    np.testing.assert_allclose(same(x, temb), x, atol=1e-6)


def test_residual_block_rejects_indivisible_groups() -> None:
    with pytest.raises(ValueError, match="num_groups=8 for 12 channels.*is 6"):
        ResidualBlock(12, num_groups=8)
    x, temb = _block_inputs(channels=12)
    with pytest.raises(ValueError, match="num_groups=8 for 12 channels"):
        ResidualBlock(16, num_groups=8)(x, temb)


# --- AttentionBlock -------------------------------------------------------------------------


def _attention_input(seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(BATCH, 4, 4, 8)).astype("float32")


def _built_attention(num_heads: int) -> AttentionBlock:
    layer = AttentionBlock(num_heads=num_heads, num_groups=4)
    layer(_attention_input())
    perturb_weights(layer, scale=0.3)
    return layer


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_attention_matches_numpy_reference(num_heads: int) -> None:
    layer = _built_attention(num_heads)
    x = _attention_input()
    np.testing.assert_allclose(layer(x), reference_attention(layer, x), atol=1e-4)


def test_attention_is_permutation_equivariant_over_positions() -> None:
    layer = _built_attention(num_heads=2)
    x = _attention_input()
    perm = np.random.default_rng(5).permutation(16)

    def permute(a):
        a = np.asarray(a)
        return a.reshape(BATCH, 16, -1)[:, perm].reshape(a.shape)

    np.testing.assert_allclose(layer(permute(x)), permute(layer(x)), atol=1e-5)


def test_attention_mixes_positions_but_not_batch_elements() -> None:
    layer = _built_attention(num_heads=1)
    x = _attention_input()
    changed = x.copy()
    changed[0, 0, 0] += 1.0
    delta = np.abs(np.asarray(layer(changed)) - np.asarray(layer(x)))
    assert delta[0, 3, 3].max() > 1e-4  # a far-away pixel of the same image
    assert delta[1].max() == 0.0  # another image of the batch


def test_attention_in_functional_model_has_dynamic_batch() -> None:
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, AttentionBlock(num_heads=2, num_groups=4)(inputs))
    for batch in (1, 5):
        assert tuple(model(np.zeros((batch, 4, 4, 8), "float32")).shape) == (batch, 4, 4, 8)


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="num_heads=3 for 8 channels"):
        AttentionBlock(num_heads=3, num_groups=4)(_attention_input())


# --- resampling -----------------------------------------------------------------------------


def test_downsample_pool_averages_2x2_blocks() -> None:
    x = np.random.default_rng(6).normal(size=(BATCH, 4, 4, 3)).astype("float32")
    expected = x.reshape(BATCH, 2, 2, 2, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(Downsample(with_conv=False)(x), expected, atol=1e-6)


def test_upsample_without_conv_is_nearest_neighbour() -> None:
    x = np.random.default_rng(7).normal(size=(BATCH, 2, 3, 3)).astype("float32")
    expected = x.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(Upsample(with_conv=False)(x), expected)


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 2), (5, 2, 3)])
def test_upsample_conv_equals_convolving_the_upsampled_image(shape: tuple[int, ...]) -> None:
    """The phase-split convolution against Keras' 3x3 'same' convolution of the repeated image."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(BATCH, *shape))
    layer = Upsample(with_conv=True, dtype="float64")
    layer.build(x.shape)
    layer.conv.bias.assign(rng.normal(size=shape[-1]))
    expected = layer.conv(x.repeat(2, axis=1).repeat(2, axis=2))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_conv", [True, False])
def test_resampling_configs_keep_with_conv(with_conv: bool) -> None:
    for layer in (Downsample(with_conv), Upsample(with_conv)):
        assert type(layer).from_config(layer.get_config()).with_conv is with_conv


@pytest.mark.parametrize("with_conv", [True, False])
def test_resampling_shapes_match_compute_output_shape(with_conv: bool) -> None:
    x = np.zeros((1, 5, 6, 3), "float32")
    for layer in (Downsample(with_conv), Upsample(with_conv)):
        assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape)
