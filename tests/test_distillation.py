"""Progressive and consistency distillation, checked where the answer is known.

Gaussian data x_0 ~ N(MU, S^2) have a closed-form denoiser (tests/oracle.py) and a closed-form
probability-flow ODE map, so the target of a student step (where two teacher DDIM steps land, as
one step's x_0) and the samples of a student that fits it are exact numbers. A linear network
(per timestep, eps = c_t x + d_t) represents the exact denoiser and every exact student, so a
distillation trained on those data must end where the closed form says.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_checkpoints
from oracle import optimal_xstart

from ddpm_tf import DiffusionModel, GaussianDiffusion, SamplingSpec, get_beta_schedule
from ddpm_tf.distillation import (
    DistillationModel,
    Halving,
    Rounds,
    ddim_move,
    plan,
    step_target,
)
from ddpm_tf.distillation.halving import extended_alphas_cumprod
from ddpm_tf.errors import InputError
from ddpm_tf.optimizers import WarmupSchedule
from ddpm_tf.sampling import run_loop
from ddpm_tf.spacing import TrailingSteps, parse_steps

MU, S = 0.3, 0.2
T = 64
SHAPE = (2, 2, 1)


# ------------------------------------------------------------------------------------ grids
def test_trailing_grids_start_at_the_top_and_nest():
    assert parse_steps("trailing4") == TrailingSteps(4)
    assert TrailingSteps(4).indices(1000) == [249, 499, 749, 999]
    assert TrailingSteps(1).indices(1000) == [999]
    assert TrailingSteps(1000).indices(1000) == list(range(1000))
    for n in (1, 2, 3, 4, 8, 16, 100, 250):
        assert TrailingSteps(2 * n).indices(1000)[1::2] == TrailingSteps(n).indices(1000)
    with pytest.raises(ValueError, match="asks for 2000 steps"):
        TrailingSteps(2000).indices(1000)


def test_a_round_step_spans_one_student_step_and_two_teacher_steps():
    halving = Halving(1000, student_steps=2, teacher_steps=16, round_steps=10)
    assert halving.rounds == 3 and halving.total_steps == 30
    assert [halving.student_steps_of(r) for r in range(3)] == [8, 4, 2]
    assert [halving.round_of(s) for s in (0, 9, 10, 29, 30, 99)] == [0, 0, 1, 2, 2, 2]
    for n in (8, 4, 2):
        student, teacher = TrailingSteps(n).indices(1000), TrailingSteps(2 * n).indices(1000)
        for i in range(n):
            t, m, s = halving.indices(i, n)
            assert t == student[i] and m == teacher[2 * i]
            assert s == (student[i - 1] if i else -1)


@pytest.mark.parametrize(
    "student, teacher, message",
    [(4, 12, "power of two"), (4, 4, "power of two"), (4, 2048, "exceeds"), (0, 8, "positive")],
)
def test_a_halving_refuses_what_it_cannot_halve(student, teacher, message):
    with pytest.raises(InputError, match=message):
        Halving(1000, student, teacher, 10)


def test_rounds_of_their_own_lengths_follow_one_another():
    halving = Halving(1000, student_steps=2, teacher_steps=16, round_steps=[3, 5, 7])
    assert halving.lengths == (3, 5, 7) and halving.total_steps == 15
    assert halving.starts == (0, 3, 8) and halving.ends == (3, 8, 15)
    expected = [0] * 3 + [1] * 5 + [2] * 7 + [2] * 3  # the last round's after the end
    assert [halving.round_of(step) for step in range(18)] == expected
    assert [int(halving.round_tensor(tf.constant(step))) for step in range(18)] == expected
    assert Halving(1000, 2, 16, 4).lengths == (4, 4, 4)
    assert halving == Halving(1000, 2, 16, (3, 5, 7))  # a list (from JSON) is the tuple


@pytest.mark.parametrize(
    "round_steps, message",
    [
        ([3, 5], "lists 2 rounds, but 16 -> 2 steps takes 3 halvings"),
        ([3, 0, 7], "each of distill.round_steps must be a positive integer, got 0"),
        ([3, True, 7], "positive integer, got True"),
        (2.5, "distill.round_steps must be a positive integer, got 2.5"),
    ],
)
def test_a_halving_refuses_round_lengths_it_cannot_run(round_steps, message):
    with pytest.raises(InputError, match=message):
        Halving(1000, 2, 16, round_steps)


def _warmup_linear(base, warmup, length, local):
    """The closed form of one period: linear warm-up, then a linear decay to 0 at its end."""
    rise = min(1.0, (local + 1) / warmup) if warmup else 1.0
    return base * rise * min(max((length - local) / (length - warmup), 0.0), 1.0)


def test_the_learning_rate_restarts_each_round():
    schedule = WarmupSchedule(1e-3, warmup_steps=2, decay="linear", periods=(10,))
    rates = [float(schedule(step)) for step in range(30)]
    assert rates[:10] == rates[10:20] == rates[20:]
    assert rates == pytest.approx([_warmup_linear(1e-3, 2, 10, s % 10) for s in range(30)])
    old = {"learning_rate": 1e-3, "warmup_steps": 2, "decay": "linear", "decay_steps": 10}
    restored = WarmupSchedule.from_config({**old, "restart_every": 10})  # saved before periods
    assert restored.periods == (10,) and float(restored(13)) == pytest.approx(rates[3])
    assert WarmupSchedule.from_config(schedule.get_config()).periods == (10,)


def test_the_learning_rate_of_rounds_of_their_own_lengths_decays_to_0_at_each_end():
    schedule = WarmupSchedule(1e-3, warmup_steps=2, decay="linear", periods=(5, 10, 20))
    starts, lengths = (0, 5, 15), (5, 10, 20)
    expected = []
    for step in range(60):
        r = 2 if step >= 15 else (1 if step >= 5 else 0)
        local = step - starts[r] if step < 35 else (step - 15) % 20  # the last one repeats
        expected.append(_warmup_linear(1e-3, 2, lengths[r], local))
    rates = [float(schedule(tf.constant(step, tf.int64))) for step in range(60)]
    assert rates == pytest.approx(expected, abs=1e-9)
    with pytest.raises(InputError, match=r"each period \(2\) > `warmup_steps` \(2\)"):
        WarmupSchedule(1e-3, warmup_steps=2, decay="linear", periods=(5, 2))


# ------------------------------------------------------------------------------------ target
def _abar() -> np.ndarray:
    return GaussianDiffusion(get_beta_schedule("linear", T)).alphas_cumprod


def _ddim_np(abar, x, x0, t, s):
    """One DDIM (eta 0) step from index t to s (-1: data) in numpy float64."""
    ab_t, ab_s = abar[t], 1.0 if s < 0 else abar[s]
    eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    return math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps


def test_the_target_is_the_x0_whose_ddim_step_lands_on_the_teachers_point(np_rng):
    abar = _abar()
    table = extended_alphas_cumprod(abar)
    for t, s in [(63, 31), (31, 15), (7, -1), (40, 39)]:
        x_t, x_s = np_rng.normal(size=(2, 5, *SHAPE))
        x0 = step_target(table, tf.constant(x_t), tf.constant(x_s), [t] * 5, [s] * 5).numpy()
        np.testing.assert_allclose(_ddim_np(abar, x_t, x0, t, s), x_s, rtol=1e-10, atol=1e-12)
        moved = ddim_move(table, tf.constant(x_t), tf.constant(x0), [t] * 5, [s] * 5).numpy()
        np.testing.assert_allclose(moved, x_s, rtol=1e-10, atol=1e-12)


def _linear_network() -> keras.Model:
    """eps = c_t x + d_t: the exact denoiser of Gaussian data, and every exact student, are of
    this form (all linear in x_t at each t)."""
    x = keras.Input(SHAPE)
    t = keras.Input((), dtype="int32")
    c = keras.layers.Reshape((1, 1, 1))(keras.layers.Embedding(T, 1, name="c")(t))
    d = keras.layers.Reshape((1, 1, 1))(keras.layers.Embedding(T, 1, name="d")(t))
    return keras.Model([x, t], x * c + d)


def _exact_coefficients(abar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, d) of the optimal eps: eps = (1 - sqrt(abar) g)(x - sqrt(abar) MU) / sigma."""
    gain = np.sqrt(abar) * S**2 / (abar * S**2 + 1 - abar)
    c = (1 - np.sqrt(abar) * gain) / np.sqrt(1 - abar)
    return c, -c * np.sqrt(abar) * MU


def _teacher_network() -> keras.Model:
    network = _linear_network()
    c, d = _exact_coefficients(_abar())
    network.get_layer("c").set_weights([c[:, None]])
    network.get_layer("d").set_weights([d[:, None]])
    return network


def _distillation(student_steps=2, teacher_steps=8, round_steps=10, **kwargs):
    diffusion = GaussianDiffusion(get_beta_schedule("linear", T))
    return DistillationModel(
        _teacher_network(),
        diffusion,
        student_steps=student_steps,
        teacher_steps=teacher_steps,
        round_steps=round_steps,
        clip_denoised=False,
        **kwargs,
    )


def test_the_target_of_the_exact_teacher_is_two_closed_form_ddim_steps(np_rng):
    model, abar = _distillation(), _abar()
    x_t = np_rng.normal(size=(4, *SHAPE))
    n = 4  # round 0: a 4-step student of the 8-step teacher
    for i in range(n):
        t, m, s = model.halving.indices(i, n)
        target = model.teacher_target(tf.constant(x_t, tf.float32), tf.fill([4], i), n).numpy()
        x_m = _ddim_np(abar, x_t, optimal_xstart(x_t, abar[t], MU, S), t, m)
        x_s = _ddim_np(abar, x_m, optimal_xstart(x_m, abar[m], MU, S), m, s)
        np.testing.assert_allclose(_ddim_np(abar, x_t, target, t, s), x_s, atol=2e-5)


def _flow(x, ab_from, ab_to):
    """The probability-flow ODE's exact map between two noise levels (Gaussian data)."""
    z = (x - math.sqrt(ab_from) * MU) / math.sqrt(ab_from * S**2 + 1 - ab_from)
    return math.sqrt(ab_to) * MU + math.sqrt(ab_to * S**2 + 1 - ab_to) * z


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_student_that_fits_the_exact_flow_samples_the_data_in_its_steps(steps, np_rng):
    """The target of the exact ODE as teacher, fitted exactly: the student's `steps` DDIM calls
    carry x_T along the exact flow to the data, so its samples have the data's moments."""
    process = GaussianDiffusion(get_beta_schedule("linear", T), dtype="float64")
    abar, table = process.alphas_cumprod, extended_alphas_cumprod(process.alphas_cumprod)
    grid = TrailingSteps(steps).indices(T)
    ends = np.full(T, -1, np.int32)  # each grid step's end (-1: the data)
    ends[grid[1:]] = grid[:-1]

    def student(x_t, t):  # the eps of the exact target at each grid step (original indices t)
        s = tf.gather(tf.constant(ends), t)
        ab_t, ab_s = (
            tf.reshape(tf.gather(tf.constant(table), i + 1), [-1, 1, 1, 1]) for i in (t, s)
        )
        z = (x_t - tf.sqrt(ab_t) * MU) / tf.sqrt(ab_t * S**2 + 1 - ab_t)
        x_s = tf.sqrt(ab_s) * MU + tf.sqrt(ab_s * S**2 + 1 - ab_s) * z
        x0 = step_target(table, x_t, x_s, t, s)
        return (x_t - tf.sqrt(ab_t) * x0) / tf.sqrt(1 - ab_t)

    spec = SamplingSpec("ddim", f"trailing{steps}", clip_denoised=False)
    x_top = np_rng.normal(
        math.sqrt(abar[-1]) * MU, math.sqrt(abar[-1] * S**2 + 1 - abar[-1]), (8192, *SHAPE)
    )  # x_T drawn from q(x_T), the exact start of the flow
    samples = run_loop(process, student, x_top.shape, 0, spec, noise=x_top)["sample"].numpy()
    np.testing.assert_allclose(samples, _flow(x_top, abar[-1], 1.0), atol=1e-9)
    standard_error = S / math.sqrt(samples.size)
    assert abs(samples.mean() - MU) < 4 * standard_error
    assert abs(samples.std() / S - 1) < 4 / math.sqrt(2 * samples.size)


def _ddim_samples(model_network, steps, x_top):
    process = GaussianDiffusion(get_beta_schedule("linear", T))
    spec = SamplingSpec("ddim", f"trailing{steps}", clip_denoised=False)
    denoise = lambda x, t: model_network([x, t])  # noqa: E731
    return run_loop(process, denoise, x_top.shape, 0, spec, noise=x_top)["sample"].numpy()


def _train_on_gaussian_data(model, np_rng, steps: tuple[int, ...]) -> tuple[list, dict]:
    """Fits `model` on Gaussian data for its whole length (rate 0.05 decaying linearly over each
    round): (the rounds that ended, {n: (before, after)}, the mean distance of the student's
    n-step DDIM samples from the exact teacher's 8-step ones, same x_T, before and after)."""
    lengths = model.halving.lengths
    model.compile(keras.optimizers.Adam(WarmupSchedule(0.05, 0, "linear", periods=lengths)))
    data = np_rng.normal(MU, S, (4096, *SHAPE)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(data).repeat().batch(256)
    x_top = tf.constant(np_rng.normal(size=(2048, *SHAPE)), tf.float32)
    teacher = _ddim_samples(_teacher_network(), 8, x_top)

    def distance(n):
        return np.abs(_ddim_samples(model.ema_network, n, x_top) - teacher).mean()

    before = {n: distance(n) for n in steps}
    ended = []
    model.fit(
        dataset,
        shuffle=False,
        steps_per_epoch=model.halving.total_steps,
        callbacks=[Rounds(lambda m: ended.append(m.round))],
        verbose=0,
    )
    return ended, {n: (before[n], distance(n)) for n in steps}


def test_distillation_trains_a_two_step_student_that_samples_as_the_eight_step_teacher(np_rng):
    """Two rounds (8 -> 4 -> 2 steps) on Gaussian data from the exact denoiser: the student's
    2-step samples match the teacher's 8-step DDIM samples of the same x_T."""
    model = _distillation(round_steps=400, ema_decay=0.0, grad_clip_norm=None, seed=3)
    ended, error = _train_on_gaussian_data(model, np_rng, (2,))
    assert ended == [0, 1] and model.step == 800 and model.default_spec.steps == TrailingSteps(2)
    before, after = error[2]
    assert after < 1e-3 * S and before > 10 * after, (before, after)
    assert not np.allclose(  # the teacher of round 1 is the round-0 student, not the original
        model.teacher_network.get_layer("c").get_weights()[0],
        _exact_coefficients(_abar())[0][:, None],
    )


# ----------------------------------------------------------------------------- consistency
def test_the_consistency_target_is_the_students_x0_where_two_closed_form_ddim_steps_land(np_rng):
    """The exact denoiser as teacher and student: the target at x_t is the exact x_0 at the
    teacher's landing point x_s, and at the grid's last step (s = -1) x_s itself."""
    model, abar = _distillation(student_steps=1, teacher_steps=8, method="consistency"), _abar()
    assert model.halving.rounds == 1 and model.default_spec.steps == TrailingSteps(1)
    x_t = np_rng.normal(size=(4, *SHAPE))
    n = 4  # the grid of teacher_steps / 2 steps, each a pair of the teacher's
    for i in range(n):
        t, m, s = model.halving.indices(i, n)
        target = model.teacher_target(tf.constant(x_t, tf.float32), tf.fill([4], i), n).numpy()
        x_m = _ddim_np(abar, x_t, optimal_xstart(x_t, abar[t], MU, S), t, m)
        x_s = _ddim_np(abar, x_m, optimal_xstart(x_m, abar[m], MU, S), m, s)
        expected = x_s if s < 0 else optimal_xstart(x_s, abar[s], MU, S)
        np.testing.assert_allclose(target, expected, atol=2e-5)


def test_consistency_distillation_trains_a_one_step_student_that_samples_as_the_teacher(np_rng):
    """One round on Gaussian data from the exact denoiser: the student's single call carries
    x_T to where the teacher's 8 DDIM steps take it; its 2 DDIM steps land near there (a DDIM
    step from an exact x_0 leaves the teacher's path, so 2 steps are close, not exact)."""
    model = _distillation(
        student_steps=1,
        teacher_steps=8,
        round_steps=1500,
        method="consistency",
        loss_weighting="uniform",
        ema_decay=0.0,
        grad_clip_norm=None,
        seed=3,
    )
    ended, error = _train_on_gaussian_data(model, np_rng, (1, 2))
    assert ended == [0] and model.default_spec.steps == TrailingSteps(1)
    for steps, tolerance in [(1, 1e-3), (2, 1e-2)]:
        before, after = error[steps]
        assert after < tolerance * S and before > 10 * after, (steps, before, after)
    np.testing.assert_allclose(  # the teacher stays the trained model throughout
        model.teacher_network.get_layer("c").get_weights()[0],
        _exact_coefficients(_abar())[0][:, None],
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "teacher_steps, round_steps, message",
    [(7, 10, "must be even"), (8, [5, 5], "one round")],
)
def test_consistency_distillation_refuses_what_it_cannot_run(teacher_steps, round_steps, message):
    with pytest.raises(InputError, match=message):
        plan(T, 1, teacher_steps, round_steps, "consistency")


# ------------------------------------------------------------------------------------ model
def test_the_model_round_trips_and_its_spec_follows_the_rounds(tmp_path):
    model = _distillation(student_steps=1, teacher_steps=8, round_steps=5, teacher="runs/x")
    assert model.default_spec == SamplingSpec("ddim", "trailing4", clip_denoised=False)
    model.step_counter.assign(5)
    assert model.round == 0 and model.round_starts()  # the weights are round 0's until it starts
    model.step_counter.assign(11)
    assert model.round == 2 and model.default_spec.steps == TrailingSteps(1)
    model.compile(keras.optimizers.Adam())
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, DistillationModel) and loaded.teacher == "runs/x"
    assert loaded.halving == model.halving
    student = model.student()
    assert type(student) is DiffusionModel and student.default_spec.steps == TrailingSteps(1)
    student.save(tmp_path / "s.keras")
    assert keras.saving.load_model(tmp_path / "s.keras").default_spec == student.default_spec
    assert json.loads(json.dumps(model.get_config()))["round_steps"] == 5


def test_a_model_of_rounds_of_their_own_lengths_starts_each_and_restarts_its_ema(tmp_path):
    model = _distillation(student_steps=1, teacher_steps=8, round_steps=[2, 3, 4])
    assert model.milestones == (2, 5, 9) and model.halving.total_steps == 9
    starts, ages, rounds = [], [], []
    for step in range(10):
        model.step_counter.assign(step)
        starts.append(model.round_starts())
        ages.append(int(model._ema_age()))
        rounds.append(model.round)
    assert [s for s, starting in enumerate(starts) if starting] == [2, 5]
    assert ages == [0, 1, 0, 1, 2, 0, 1, 2, 3, 4]
    assert rounds == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # a round's weights until the next starts
    assert json.loads(json.dumps(model.get_config()))["round_steps"] == [2, 3, 4]
    model.compile(keras.optimizers.Adam())
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").halving == model.halving


def test_the_model_refuses_a_learned_timestep_sampler():
    with pytest.raises(InputError, match="timestep_sampler must be 'uniform'"):
        _distillation(timestep_sampler="loss-second-moment")


# ---------------------------------------------------------------------------------- program
def _distill(teacher, out, data_dir, *extra: str) -> int:
    from ddpm_tf.training.ddpm_distill import main as distill_main

    return distill_main(
        [
            str(teacher),
            "--steps",
            "2",
            "--run-dir",
            str(out),
            "--data-dir",
            data_dir,
            "distill.teacher_steps=8",
            "distill.round_steps=3",
            "run.checkpoint_every=1",
            "run.keep=10",
            *extra,
        ]
    )


def _keep_checkpoints_to(run_dir, step: int) -> None:
    """The run directory as a run stopped after its checkpoint of `step` left it."""
    directory = run_dir / "checkpoints"
    kept = sorted(
        (p.name.removesuffix(".index") for p in directory.glob("ckpt-*.index")),
        key=lambda name: int(name.split("-")[1]),
    )
    for name in kept:
        if int(name.split("-")[1]) > step:
            for part in directory.glob(f"{name}.*"):
                part.unlink()
    kept = [n for n in kept if int(n.split("-")[1]) <= step]
    state = [f'model_checkpoint_path: "{kept[-1]}"'] + [
        f'all_model_checkpoint_paths: "{n}"' for n in kept
    ]
    (directory / "checkpoint").write_text("\n".join(state) + "\n")


def test_the_program_distills_in_rounds_keeps_each_student_and_resumes_exactly(
    trained_run, data_dir, tmp_path, capsys
):
    from ddpm_tf.runs import load_model
    from ddpm_tf.training.ddpm_sample import main as sample_main

    straight = tmp_path / "straight"
    assert _distill(trained_run, straight, data_dir) == 0
    config = json.loads((straight / "config.json").read_text())
    assert config["distill"] == {
        "teacher": str(trained_run),
        "student_steps": 2,
        "teacher_steps": 8,
        "round_steps": 3,
        "loss_weighting": "landing",
        "method": "progressive",
    }
    assert config["train"]["steps"] == 6 and config["sampling"]["steps"] == "trailing2"
    students = straight / "students"
    assert sorted(p.name for p in students.iterdir()) == ["steps2.keras", "steps4.keras"]
    model = load_model(straight)
    assert isinstance(model, DistillationModel) and model.default_spec.steps == TrailingSteps(2)
    four = keras.saving.load_model(students / "steps4.keras")
    assert type(four) is DiffusionModel and four.default_spec.steps == TrailingSteps(4)
    # A rerun from the checkpoint at the end of round 0 starts round 1 and ends where the
    # uninterrupted run did, bit for bit (with the teacher run's dropout).
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    _keep_checkpoints_to(resumed, 3)
    (resumed / "students" / "steps2.keras").unlink()
    capsys.readouterr()
    assert _distill(trained_run, resumed, data_dir) == 0
    assert "resuming at step 3 of 6" in capsys.readouterr().out
    assert_same_checkpoints(straight, resumed)
    a, b = (keras.saving.load_model(d / "students" / "steps2.keras") for d in (straight, resumed))
    for left, right in zip(a.ema_network.weights, b.ema_network.weights, strict=True):
        np.testing.assert_array_equal(left.numpy(), right.numpy())
    # The student run samples as the student does, with no step count given.
    out = tmp_path / "samples"
    assert sample_main([str(straight), "--num-samples", "4", "--out", str(out)]) == 0
    settings = json.loads(str(np.load(out / "samples.npz")["settings"]))
    assert settings["method"] == "ddim" and settings["steps"] == "trailing2"
    # ddpm-eval --compare: the teacher's methods, then each kept student in its own steps.
    from ddpm_tf.classifier import ImageClassifier
    from ddpm_tf.training.ddpm_eval import main as eval_main

    classifier = tmp_path / "classifier.keras"
    ImageClassifier((8, 8, 1), 10, width=8, feature_dim=16).save(classifier)
    argv = [str(straight), "--classifier", str(classifier), "--data-dir", data_dir]
    argv += ["--bpd-examples", "0", "--num-samples", "20", "--compare", "ddim:trailing8"]
    assert eval_main([*argv, "--out", str(tmp_path / "eval")]) == 0
    rows = json.loads((tmp_path / "eval" / "quality.json").read_text())
    assert [(r["method"], r["steps"], r["num_steps"]) for r in rows] == [
        ("ddim", "trailing8", 8),
        ("distilled", "trailing4", 4),
        ("distilled", "trailing2", 2),
    ]
    grids = sorted(p.name for p in (tmp_path / "eval").glob("samples_*.png"))
    assert grids == [
        f"samples_{n}.png" for n in ("ddim_trailing8", "distilled_trailing2", "distilled_trailing4")
    ]


def test_the_program_runs_rounds_of_their_own_lengths_and_scores_each_at_its_end(
    trained_run, data_dir, tmp_path
):
    out = tmp_path / "uneven"
    assert (
        _distill(trained_run, out, data_dir, "distill.round_steps=[2,4]", "run.num_samples=4") == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["distill"]["round_steps"] == [2, 4] and config["train"]["steps"] == 6
    assert config["run"]["eval_every"] == config["run"]["sample_every"] == 6
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["test_loss"]] == [2, 6]
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "step_00000002.png",
        "step_00000006.png",
    ]
    assert sorted(p.name for p in (out / "students").iterdir()) == ["steps2.keras", "steps4.keras"]


def test_the_program_distills_by_consistency_in_one_round(trained_run, data_dir, tmp_path):
    from ddpm_tf.runs import load_model

    out = tmp_path / "consistency"
    assert _distill(trained_run, out, data_dir, "distill.method=consistency") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["distill"]["method"] == "consistency" and config["train"]["steps"] == 3
    assert [p.name for p in (out / "students").iterdir()] == ["steps2.keras"]
    model = load_model(out)
    assert model.method == "consistency" and model.halving.rounds == 1
    assert model.default_spec.steps == TrailingSteps(2)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["distill.method=rounds"], "distill.method"),
        (["distill.method=consistency", "distill.round_steps=[3,3]"], "in one round"),
        (["distill.round_steps=[3,3,3]"], "lists 3 rounds, but 8 -> 2 steps takes 2 halvings"),
        (["distill.teacher_steps=6"], "power of two"),
        (["train.steps=10"], "train.steps is set by ddpm-distill"),
        (["distill.round_steps=0"], "distill.round_steps must be a positive integer"),
        (["distill.rounds=2"], "unknown config key"),
    ],
)
def test_the_program_refuses_bad_settings_before_writing(
    trained_run, data_dir, tmp_path, capsys, extra, message
):
    assert _distill(trained_run, tmp_path / "out", data_dir, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_program_refuses_a_teacher_that_is_no_trained_run(tmp_path, data_dir, capsys):
    (tmp_path / "empty").mkdir()
    assert _distill(tmp_path / "empty", tmp_path / "out", data_dir) == 2
    assert "is not a run directory of ddpm-train" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_export_of_a_student_samples_as_the_student_with_portable_noise():
    from ddpm_tf.export.ddpm_export import build_parser, model_spec

    model = _distillation(student_steps=4, teacher_steps=8)
    model.step_counter.assign(model.halving.total_steps)
    spec = model_spec(build_parser().parse_args(["run", "--out", "x"]), model)
    assert (spec.method, spec.steps, spec.noise_source) == ("ddim", TrailingSteps(4), "portable")
    flagged = model_spec(build_parser().parse_args(["run", "--out", "x", "--steps", "8"]), model)
    assert flagged.steps == parse_steps(8) and flagged.noise_source == "portable"
