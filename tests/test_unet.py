"""Tests for the DDPM U-Net in ddpm_tf.unet."""

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import unet as unet_module
from ddpm_tf.unet import PRESETS, UNet, from_preset

SMALL: dict[str, Any] = {
    "image_size": 8,
    "in_channels": 2,
    "ch": 16,
    "ch_mult": (1, 2),
    "num_res_blocks": 1,
    "attn_resolutions": (4,),
    "num_groups": 4,
}
BATCH = 3
HO_CIFAR10_PARAMS = 35_746_307
HO_256_PARAMS = 113.7e6


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


def small_unet(**overrides: Any) -> UNet:
    return UNet(**{**SMALL, **overrides})


def perturb_weights(model: keras.Model, scale: float = 0.05, seed: int = 1) -> None:
    """Add noise to every weight so that zero-initialised layers affect the output."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(weight.numpy() + rng.normal(0.0, scale, weight.shape).astype("float32"))


def inputs(
    model: UNet, batch: int = BATCH, seed: int = 0, labels: bool | None = None
) -> list[np.ndarray]:
    """Random ``[x_t, t]`` (plus ``y`` for class-conditional models)."""
    rng = np.random.default_rng(seed)
    size, channels = model.image_size, model.in_channels
    x = rng.normal(size=(batch, size, size, channels)).astype("float32")
    t = rng.integers(0, 1000, size=batch).astype("int32")
    if labels is None:
        labels = model.num_classes is not None
    if not labels:
        return [x, t]
    return [x, t, rng.integers(0, model.num_classes, size=batch).astype("int32")]


# --- architecture ---------------------------------------------------------------------------


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_output_shape_and_dtype(learn_sigma: bool) -> None:
    model = small_unet(learn_sigma=learn_sigma)
    out = model(*inputs(model))
    channels = 2 * SMALL["in_channels"] if learn_sigma else SMALL["in_channels"]
    assert tuple(out.shape) == (BATCH, 8, 8, channels)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_fresh_model_outputs_zero() -> None:
    """The zero-initialised output convolution makes the initial prediction exactly 0."""
    model = small_unet()
    np.testing.assert_array_equal(model(*inputs(model)), 0.0)


def test_ddpm_cifar10_matches_ho_et_al_parameter_count() -> None:
    model = from_preset("ddpm_cifar10")
    assert model.count_params() == HO_CIFAR10_PARAMS


def test_ddpm_256_parameter_count() -> None:
    count = from_preset("ddpm_256").count_params()
    assert abs(count - HO_256_PARAMS) / HO_256_PARAMS < 0.01
    assert f"{count:,}" in unet_module.from_preset.__doc__


@pytest.mark.parametrize("name", ["ddpm_cifar10", "tiny_8", "small_28"])
def test_documented_preset_parameter_counts(name: str) -> None:
    count = from_preset(name).count_params()
    assert f"{count:,}" in unet_module.from_preset.__doc__


def test_layout_follows_ho_et_al() -> None:
    """Blocks per path and attention placement for the CIFAR-10 configuration."""
    model = from_preset("ddpm_cifar10")
    down = [layer.name for layer in model.down_layers]
    up = [layer.name for layer in model.up_layers]
    assert down == [
        "down0_res0",
        "down0_res1",
        "down0",
        "down1_res0",
        "down1_attn0",
        "down1_res1",
        "down1_attn1",
        "down1",
        "down2_res0",
        "down2_res1",
        "down2",
        "down3_res0",
        "down3_res1",
    ]
    assert sum(name.startswith("up") and "_res" in name for name in up) == 4 * 3
    assert [name for name in up if "attn" in name] == ["up1_attn0", "up1_attn1", "up1_attn2"]
    assert [layer.name for layer in model.mid_layers] == ["mid_res0", "mid_attn", "mid_res1"]


def test_from_preset_applies_overrides() -> None:
    model = from_preset("tiny_8", num_classes=10, learn_sigma=True)
    assert model.num_classes == 10
    assert model.learn_sigma
    assert model.ch == PRESETS["tiny_8"]["ch"]
    assert UNet.from_preset("tiny_8").get_config()["ch_mult"] == list(PRESETS["tiny_8"]["ch_mult"])


# --- calling conventions --------------------------------------------------------------------


def test_positional_and_list_calls_agree() -> None:
    model = small_unet(num_classes=4)
    perturb_weights(model)
    x, t, y = inputs(model)
    np.testing.assert_array_equal(model(x, t, y), model([x, t, y]))
    np.testing.assert_array_equal(model(x, t, y), model((x, t, y)))


@pytest.mark.parametrize("num_classes", [None, 5])
def test_usable_inside_functional_model(num_classes: int | None) -> None:
    model = small_unet(num_classes=num_classes)
    perturb_weights(model)
    size = SMALL["image_size"]
    symbolic = [keras.Input((size, size, SMALL["in_channels"])), keras.Input((), dtype="int32")]
    if num_classes is not None:
        symbolic.append(keras.Input((), dtype="int32"))
    wrapper = keras.Model(symbolic, model(symbolic))
    arrays = inputs(model, batch=2)
    np.testing.assert_allclose(wrapper(arrays), model(arrays), atol=1e-6)
    assert tuple(wrapper(inputs(model, batch=5)).shape) == (5, size, size, SMALL["in_channels"])


def test_class_conditioning_and_null_class() -> None:
    model = small_unet(num_classes=3)
    perturb_weights(model)
    x, t, _ = inputs(model)
    outputs = [np.asarray(model(x, t, np.full(BATCH, label, "int32"))) for label in range(4)]
    assert np.isfinite(outputs[3]).all()  # label num_classes is the null class
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(outputs[a] - outputs[b]).max() > 1e-4


def test_timestep_changes_output() -> None:
    model = small_unet()
    perturb_weights(model)
    x, _ = inputs(model)
    early = model(x, np.full(BATCH, 1, "int32"))
    late = model(x, np.full(BATCH, 900, "int32"))
    assert np.abs(np.asarray(early) - np.asarray(late)).max() > 1e-4


def test_dropout_active_only_in_training() -> None:
    model = small_unet(dropout=0.3)
    perturb_weights(model)
    x, t = inputs(model)
    np.testing.assert_array_equal(model(x, t), model(x, t, training=False))
    train = [np.asarray(model(x, t, training=True)) for _ in range(2)]
    assert np.abs(train[0] - train[1]).max() > 1e-4


# --- serialisation --------------------------------------------------------------------------


def test_keras_file_round_trip(tmp_path) -> None:
    model = small_unet(
        num_classes=3, learn_sigma=True, use_scale_shift_norm=True, num_heads=2, dropout=0.1
    )
    perturb_weights(model)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded, UNet)
    assert loaded.get_config() == model.get_config()
    arrays = inputs(model)
    np.testing.assert_array_equal(loaded(arrays), model(arrays))


def test_functional_wrapper_round_trip(tmp_path) -> None:
    model = small_unet()
    perturb_weights(model)
    symbolic = [keras.Input((8, 8, 2)), keras.Input((), dtype="int32")]
    wrapper = keras.Model(symbolic, model(symbolic))
    path = tmp_path / "wrapper.keras"
    wrapper.save(path)
    loaded = keras.models.load_model(path)
    arrays = inputs(model)
    np.testing.assert_array_equal(loaded(arrays), wrapper(arrays))


def test_config_round_trip() -> None:
    model = small_unet(num_classes=7, resamp_with_conv=False)
    config = model.get_config()
    assert UNet.from_config(config).get_config() == config


# --- mixed precision ------------------------------------------------------------------------


def test_mixed_float16_outputs_finite_float32(mixed_precision) -> None:
    model = small_unet(num_classes=3, learn_sigma=True, use_scale_shift_norm=True)
    perturb_weights(model)
    out = model(*inputs(model))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(np.asarray(out)).all()
    assert model.conv_in.compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in model.weights)
    symbolic = [keras.Input((8, 8, 2))] + [keras.Input((), dtype="int32") for _ in range(2)]
    assert model(symbolic).dtype == "float32"


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 10, "ch_mult": (1, 2, 2)}, r"`image_size`.*divisible by .* = 4.*10"),
        ({"attn_resolutions": (3,)}, r"`attn_resolutions` contains \[3\].*\[8, 4\]"),
        ({"ch": 20, "num_groups": 8}, r"`ch` must be divisible by `num_groups`.*ch=20"),
        ({"ch_mult": ()}, r"`ch_mult`"),
        ({"ch_mult": (1, 0)}, r"`ch_mult`.*\(1, 0\)"),
        ({"num_res_blocks": 0}, r"`num_res_blocks`.*num_res_blocks=0"),
        ({"image_size": 0}, r"`image_size`.*image_size=0"),
        ({"dropout": 1.0}, r"`dropout`.*\[0, 1\).*dropout=1.0"),
        ({"num_heads": 3}, r"`num_heads`.*num_heads=3"),
        ({"num_classes": 0}, r"`num_classes`.*num_classes=0"),
    ],
)
def test_invalid_constructor_arguments(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_unet(**overrides)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="preset `name`='nope'.*tiny_8"):
        from_preset("nope")


_EXPECTED_SHAPE = r"`x_t` must have shape \[batch, 8, 8, 2\]"


@pytest.mark.parametrize(
    ("x_shape", "match"),
    [
        ((3, 8, 8), _EXPECTED_SHAPE + r".*received shape \(3, 8, 8\)"),
        ((3, 16, 16, 2), _EXPECTED_SHAPE + r".*received shape \(3, 16, 16, 2\)"),
        ((3, 8, 8, 3), _EXPECTED_SHAPE + r".*received shape \(3, 8, 8, 3\)"),
    ],
)
def test_invalid_image_shape(x_shape: tuple[int, ...], match: str) -> None:
    model = small_unet()
    with pytest.raises(ValueError, match=match):
        model(np.zeros(x_shape, "float32"), np.zeros(BATCH, "int32"))


def test_invalid_image_shape_in_functional_model() -> None:
    model = small_unet()
    with pytest.raises(ValueError, match=_EXPECTED_SHAPE):
        model([keras.Input((16, 16, 2)), keras.Input((), dtype="int32")])


def test_invalid_timestep_and_label_inputs() -> None:
    unconditional = small_unet()
    conditional = small_unet(num_classes=3)
    x, t = inputs(unconditional)
    y = np.zeros(BATCH, "int32")
    with pytest.raises(ValueError, match=r"`t` must have shape \[batch\]"):
        unconditional(x, t[:, None])
    with pytest.raises(ValueError, match="`t`.*required"):
        unconditional(x)
    with pytest.raises(ValueError, match="`y` were given but the model is unconditional"):
        unconditional(x, t, y)
    with pytest.raises(ValueError, match="`y`.*required since num_classes=3.*label 3"):
        conditional(x, t)
    with pytest.raises(ValueError, match=r"\[x_t, t\] or \[x_t, t, y\]"):
        conditional([x])
    with pytest.raises(ValueError, match="not both"):
        conditional([x, t], y=y)


# --- training -------------------------------------------------------------------------------


def test_gradients_reach_every_trainable_weight() -> None:
    model = small_unet(num_classes=3, learn_sigma=True, use_scale_shift_norm=True)
    perturb_weights(model)
    x, t, y = inputs(model)
    target = np.random.default_rng(2).normal(size=(BATCH, 8, 8, 4)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, t, y, training=True) - target) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 0
    for weight, grad in zip(model.trainable_weights, grads, strict=True):
        assert grad is not None, weight.path
        assert float(tf.norm(tf.convert_to_tensor(grad))) > 0.0, weight.path
