"""DiffusionModel: fit on tfds, EMA, clipping, warm-up, evaluate, save/load, functional networks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import assert_same_weights, weight_distance

from ddpm_tf import GaussianDiffusion, data, get_beta_schedule, unet
from ddpm_tf.model import DiffusionModel
from ddpm_tf.optimizers import FusedAdam, WarmupSchedule, default_optimizer

T = 100


def _diffusion(**kwargs):
    return GaussianDiffusion(get_beta_schedule("linear", 1000)[:T], **kwargs)


def _tiny(**kwargs):
    return unet.from_preset("tiny_8", **kwargs)


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8, 1), np.float32) - 1.0
    x[:, 2:6, 2:6] = rng.uniform(0.5, 1.0, (n, 1, 1, 1))  # bright squares on black
    return x


def _dataset(batch=8, n=32):
    return tf.data.Dataset.from_tensor_slices(_images(n)).batch(batch, drop_remainder=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model fitted on a mocked tfds MNIST pipeline (resized to 8x8), with a callback."""
    keras.utils.set_random_seed(1)
    model = DiffusionModel(_tiny(), _diffusion(), ema_decay=0.9, seed=3)
    model.compile(keras.optimizers.Adam(WarmupSchedule(1e-3, 2)))
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load_images("mnist", batch_size=16, image_size=8, download=True)
        seen = []
        callback = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: seen.append(logs["loss"])
        )
        history = model.fit(ds, epochs=2, verbose=0, callbacks=[callback])
    return model, history, seen


def test_fit_on_a_tfds_pipeline_runs_callbacks_and_counts_steps(trained):
    model, history, seen = trained
    assert len(seen) == 8 and np.all(np.isfinite(seen))
    assert set(history.history) == {"loss", "mse", "grad_norm"}
    assert model.step == 8 == int(model.optimizer.iterations.numpy())
    assert weight_distance(model.network.get_weights(), model.ema_network.get_weights()) > 0


def test_evaluate_reports_loss_and_bound_with_ema_weights(trained):
    model, _, _ = trained
    ds = _dataset()
    first = model.evaluate(ds, verbose=0, return_dict=True)
    again = model.evaluate(ds, verbose=0, return_dict=True)
    assert set(first) == {"loss", "mse", "vlb_bpd"}
    assert first == again  # evaluation noise restarts at every evaluate()
    assert 0.5 < first["vlb_bpd"] < 50  # a bound in bits/dim for barely-trained weights


def test_evaluation_noise_restarts_in_evaluate_not_in_reset_metrics(trained, monkeypatch):
    """`evaluate` restarts the test draws itself; `reset_metrics` (called by Keras and by the
    training callbacks between logs) leaves the evaluation counter alone."""
    model, _, _ = trained
    ds = _dataset()
    first = model.evaluate(ds, verbose=0, return_dict=True)
    assert int(model.eval_counter.numpy()) == 4  # one per batch of the pass
    model.reset_metrics()
    assert int(model.eval_counter.numpy()) == 4
    # Keras' reset_metrics without any counter side effect: evaluate still restarts the noise.
    monkeypatch.setattr(model, "reset_metrics", lambda: [m.reset_state() for m in model.metrics])
    model.eval_counter.assign(7)  # as a pass cut short would leave it
    assert model.evaluate(ds, verbose=0, return_dict=True) == first
    model.eval_counter.assign(7)
    model.restart_evaluation_noise()
    assert int(model.eval_counter.numpy()) == 0


def test_training_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = DiffusionModel(_tiny(dropout=0.0), _diffusion(), seed=0)
    model.compile(keras.optimizers.Adam(2e-3))
    ds = _dataset(batch=16, n=64).repeat()
    before = model.evaluate(_dataset(n=64), verbose=0, return_dict=True)["loss"]
    model.ema_decay = 0.0  # evaluate the trained weights themselves
    model.fit(ds, steps_per_epoch=60, epochs=1, verbose=0)
    after = model.evaluate(_dataset(n=64), verbose=0, return_dict=True)["loss"]
    assert after < 0.7 * before, (before, after)


def test_ema_update_with_warmup_is_exact():
    keras.utils.set_random_seed(2)
    model = DiffusionModel(_tiny(), _diffusion(), ema_decay=0.999)
    model.compile(keras.optimizers.SGD(0.1))
    init = model.network.get_weights()
    model.fit(_dataset(batch=8, n=8), epochs=1, verbose=0)
    after_one = model.network.get_weights()
    decay = min(0.999, 1 / 10)  # warm-up: (1 + 0) / (10 + 0) at the first update
    expected = [decay * w0 + (1 - decay) * w1 for w0, w1 in zip(init, after_one, strict=True)]
    assert_same_weights(model.ema_network.get_weights(), expected, rtol=1e-5, atol=1e-7)
    assert float(model.ema_decay_now()) == pytest.approx(2 / 11)


def test_gradient_is_clipped_to_the_global_norm():
    keras.utils.set_random_seed(3)
    lr, clip = 0.5, 1e-3
    model = DiffusionModel(_tiny(), _diffusion(), grad_clip_norm=clip)
    model.compile(keras.optimizers.SGD(lr))
    before = model.network.get_weights()
    logs = model.fit(_dataset(batch=8, n=8), epochs=1, verbose=0).history
    step = weight_distance(model.network.get_weights(), before)
    assert logs["grad_norm"][0] > 10 * clip  # the raw gradient was larger than the clip...
    assert step / lr == pytest.approx(clip, rel=1e-3)  # ...and SGD moved by exactly lr * clip


def test_warmup_schedule_closed_form():
    schedule = WarmupSchedule(2e-4, 5000)
    for step, want in ((0, 2e-4 / 5000), (2499, 1e-4), (4999, 2e-4), (10**6, 2e-4)):
        assert float(schedule(step)) == pytest.approx(want, rel=1e-6)
    assert float(WarmupSchedule(1e-3, 0)(0)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupSchedule(1e-3, -1)


def test_decaying_schedules_closed_form():
    # warm-up of 100 steps to 1e-3, then a decay over steps 100..1100 (f = (step - 100) / 1000)
    cosine = WarmupSchedule(1e-3, 100, decay="cosine", decay_steps=1100)
    linear = WarmupSchedule(1e-3, 100, decay="linear", decay_steps=1100)
    for step in (0, 49, 99, 100, 350, 600, 850, 1099, 1100, 5000):
        warm = min(1.0, (step + 1) / 100)
        f = min(1.0, max(0.0, (step - 100) / 1000))
        want_cos = 1e-3 * warm * (1 + math.cos(math.pi * f)) / 2
        want_lin = 1e-3 * warm * (1 - f)
        assert float(cosine(step)) == pytest.approx(want_cos, rel=1e-5, abs=1e-12)
        assert float(linear(step)) == pytest.approx(want_lin, rel=1e-5, abs=1e-12)
    assert float(cosine(600)) == pytest.approx(5e-4, rel=1e-5)  # half-way: half the peak
    assert float(cosine(1100)) == 0.0
    restored = WarmupSchedule.from_config(cosine.get_config())
    assert float(restored(777)) == float(cosine(777))
    with pytest.raises(ValueError, match="decay_steps"):
        WarmupSchedule(1e-3, 100, decay="cosine", decay_steps=100)
    with pytest.raises(ValueError, match="decay"):
        WarmupSchedule(1e-3, 100, decay="exponential", decay_steps=1000)


def test_default_compile_is_ho_et_al_adam_with_warmup():
    model = DiffusionModel(_tiny(), _diffusion())
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(2e-4 / 5000)


def test_keras_file_round_trip_is_exact_and_training_continues_identically(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for name in ("network", "ema_network"):
        assert_same_weights(getattr(model, name).get_weights(), getattr(loaded, name).get_weights())
    assert loaded.diffusion.get_config() == model.diffusion.get_config()
    assert loaded.step == model.step
    a = model.generate(3, seed=5, method="ddim", steps=10)
    b = loaded.generate(3, seed=5, method="ddim", steps=10)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    ds = _dataset(batch=8, n=8)
    model.fit(ds, verbose=0)
    loaded.fit(ds, verbose=0)  # same optimizer state, step counter (seeds) and EMA
    assert_same_weights(
        model.ema_network.get_weights(), loaded.ema_network.get_weights(), 1e-6, 1e-7
    )


def test_generate_uses_ema_weights_and_is_seeded(trained):
    model, _, _ = trained
    a = model.generate(2, seed=1, method="ddim", steps="ddim10")
    b = model.generate(2, seed=1, method="ddim", steps="ddim10")
    raw = model.generate(2, seed=1, method="ddim", steps="ddim10", use_ema=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - raw.numpy()).max() > 1e-4
    assert a.shape == (2, 8, 8, 1) and float(tf.reduce_max(tf.abs(a))) <= 1.0
    ancestral = model.generate(2, seed=1, steps=20)
    assert ancestral.shape == (2, 8, 8, 1)


def test_functional_network_with_the_unet_as_a_layer():
    keras.utils.set_random_seed(4)
    inner = _tiny()
    x = keras.Input((8, 8, 1))
    t = keras.Input((), dtype="int32")
    out = keras.layers.Rescaling(0.5)(inner([x, t]))
    network = keras.Model([x, t], out)
    model = DiffusionModel(network, _diffusion())
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(_dataset(batch=8, n=16), verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert model.generate(2, seed=0, method="ddim", steps=5).shape == (2, 8, 8, 1)


@pytest.mark.parametrize(
    "var_type, loss_type, sampler",
    [("learned_range", "rescaled_mse", "loss-second-moment"), ("learned", "kl", "uniform")],
)
def test_learned_variance_losses_and_importance_sampling(var_type, loss_type, sampler):
    keras.utils.set_random_seed(5)
    model = DiffusionModel(
        _tiny(learn_sigma=True),
        _diffusion(model_var_type=var_type, loss_type=loss_type),
        timestep_sampler=sampler,
    )
    model.compile(keras.optimizers.Adam(1e-3))
    logs = model.fit(_dataset(batch=8, n=32), epochs=1, verbose=0).history
    assert "vb" in logs and np.isfinite(logs["loss"][0])
    if sampler == "loss-second-moment":
        assert int(tf.reduce_sum(model.timestep_sampler.loss_counts)) == 32  # every loss recorded


def test_bad_input_is_refused_before_training():
    model = DiffusionModel(_tiny(), _diffusion())
    model.compile()
    before = model.network.get_weights()
    with pytest.raises(ValueError, match=r"images of shape \[B, 8, 8, 1\]"):
        model.fit(np.zeros((8, 16, 16, 1), np.float32), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="float images in \\[-1, 1\\], got dtype uint8"):
        model.fit(np.zeros((8, 8, 8, 1), np.uint8), batch_size=8, verbose=0)
    assert_same_weights(before, model.network.get_weights())
    with pytest.raises(ValueError, match="`model_output` has 1 channels.*learned_range"):
        DiffusionModel(_tiny(), _diffusion(model_var_type="learned_range"))
    with pytest.raises(ValueError, match="ema_decay"):
        DiffusionModel(_tiny(), _diffusion(), ema_decay=1.0)
    with pytest.raises(ValueError, match="timestep_sampler"):
        DiffusionModel(_tiny(), _diffusion(), timestep_sampler="importance")


class CountingModel(DiffusionModel):
    """A subclass with state of its own: how many images it has trained on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images_seen = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="images_seen"
        )

    def train_step(self, data):
        logs = super().train_step(data)
        self.images_seen.assign_add(tf.cast(tf.shape(data)[0], tf.int64))
        return logs


def test_state_a_subclass_adds_is_checkpointed_and_resumes_exactly(tmp_path):
    from ddpm_tf.runs import RunDirectory

    def build():
        keras.utils.set_random_seed(2)
        model = CountingModel(_tiny(ch=16, num_groups=4), _diffusion(), ema_decay=0.9, seed=1)
        model.compile(keras.optimizers.Adam(1e-3))
        return model

    x = _images(16)
    uninterrupted = build()
    assert any(v is uninterrupted.images_seen for v in uninterrupted.checkpoint_variables())
    uninterrupted.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    run = RunDirectory(tmp_path / "run")
    run.open({"note": "subclass state"}, uninterrupted)
    run.save(uninterrupted)
    uninterrupted.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)

    resumed = build()
    assert int(resumed.images_seen.numpy()) == 0
    assert RunDirectory(tmp_path / "run").restore(resumed) == 2 == resumed.step
    assert int(resumed.images_seen.numpy()) == 16
    resumed.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(resumed.images_seen.numpy()) == 32 == int(uninterrupted.images_seen.numpy())
    for a, b in zip(
        resumed.checkpoint_variables(), uninterrupted.checkpoint_variables(), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_fused_adam_matches_adam_in_float64_and_serialises():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(7, 5)).astype(np.float32)
    grads = [rng.normal(size=(7, 5)).astype(np.float32) for _ in range(5)]
    weight = keras.Variable(start)
    optimizer = FusedAdam(WarmupSchedule(1e-2, 3), epsilon=1e-6)
    optimizer.build([weight])
    for g in grads:
        optimizer.apply([tf.constant(g)], [weight])
    m, v, w = np.zeros(start.shape), np.zeros(start.shape), start.astype(np.float64)
    for t, g in enumerate(grads, start=1):
        lr = 1e-2 * min(t / 3, 1.0)  # the warm-up's rate at optimizer step t - 1
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * np.square(g, dtype=np.float64)
        w -= lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-6)
    np.testing.assert_allclose(weight.numpy(), w, rtol=0, atol=1e-6)
    assert isinstance(default_optimizer(), FusedAdam)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(again) is FusedAdam and again.epsilon == 1e-6
