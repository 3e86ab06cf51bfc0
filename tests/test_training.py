"""The training program: configs, run directories, exact resume, the NaN guard and the CLIs."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL, assert_same_checkpoints, checkpoint_values

from ddpm_tf import config as schema
from ddpm_tf import every_class, rng
from ddpm_tf.data import load_arrays
from ddpm_tf.evaluation import fid_from_features
from ddpm_tf.features import ClassifierFeatures
from ddpm_tf.likelihood import bits_per_dim
from ddpm_tf.pixels import scale_to_unit, unit_to_uint8
from ddpm_tf.runs import CURVE_FILE, CheckpointError, RunConfigError, RunDirectory, load_model
from ddpm_tf.sampling import generate_uint8
from ddpm_tf.sampling.spec import SamplingSpec
from ddpm_tf.training import ddpm_eval as evaluate_program
from ddpm_tf.training import ddpm_train_presets as cfg
from ddpm_tf.training import ddpm_train_run as train_program
from ddpm_tf.training.ddpm_classifier import main as classifier_main
from ddpm_tf.training.ddpm_eval import main as eval_main
from ddpm_tf.training.ddpm_sample import main as sample_main
from ddpm_tf.training.ddpm_train import main as train_main
from ddpm_tf.training.ddpm_train_curve import TrainingCurve, read_curve


def _train(run_dir, data_dir, *overrides: str) -> int:
    return train_main(["--run-dir", str(run_dir), "--data-dir", data_dir, *SMALL, *overrides])


# ------------------------------------------------------------------------------------ configs
def test_every_preset_resolves():
    names = {"digits", "mnist", "fashion_mnist", "cifar10", "celebahq256", "folder64"}
    assert names <= set(cfg.preset_names())
    for name in cfg.preset_names():
        _, config = cfg.resolve(name, ["data.images=DIR"] if name == "folder64" else [])
        assert config.keys() == schema.DEFAULTS.keys()
    assert cfg.resolve("cifar10")[1]["model"]["preset"] == "ddpm_cifar10"


def test_overrides_are_typed():
    _, config = cfg.resolve(
        "digits",
        ["train.learning_rate=1e-3", "model.ch_mult=[1, 2]", "data.dataset=mnist", "train.steps=7"],
    )
    assert config["train"]["learning_rate"] == 1e-3 and config["train"]["steps"] == 7
    assert config["model"]["ch_mult"] == [1, 2] and config["data"]["dataset"] == "mnist"
    one = cfg.resolve("digits", ["train.learning_rate=1"])[1]["train"]["learning_rate"]
    assert one == 1.0  # int where float


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stepz=3", "Did you mean"),
        ("nosection=3", "section.name"),
        ("train.steps=many", "must be a int"),
        ("train.mixed_precision=1", 'must be false, "float16" or "bfloat16"'),
        ("train.mixed_precision=float64", 'must be false, "float16" or "bfloat16"'),
        ("train.steps=0", "train.steps must be >= 1"),
        ("sampling.method=euler", "method"),
        ("train.learning_rate=0", r"train\.learning_rate must be > 0"),
        ("train.decay=cos", r"Unknown `train\.decay` 'cos'"),
        ("train.warmup_steps=-1", r"train\.warmup_steps must be >= 0"),
        (
            "train.decay=cosine train.warmup_steps=9000",
            r"train\.steps \(\d+\) > train\.warmup_steps \(9000\)",
        ),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(schema.ConfigError, match=message):
        cfg.resolve("digits", override.split())


def test_a_bad_schedule_is_refused_with_the_config():
    """Before any data is read: the linear schedule reaches beta = 1 at T = 20."""
    with pytest.raises(schema.ConfigError, match=r"\[diffusion\] .*strictly inside \(0, 1\)"):
        cfg.resolve("digits", ["diffusion.num_timesteps=20"])


def _old_style(config: dict) -> dict:
    """`config` under the key names of OLD_KEYS, as runs saved it before the keys were renamed."""
    older = json.loads(json.dumps(config))
    for old, new in schema.OLD_KEYS.items():
        (section, old_name), (_, new_name) = old.split("."), new.split(".")
        older[section][old_name] = older[section].pop(new_name)
    return older


def test_old_key_names_in_overrides_and_files_still_work(tmp_path, capsys):
    overrides = ["train.lr=1e-3", "train.warmup=7", "diffusion.mean_type=v", "train.grad_clip=0.5"]
    _, config = cfg.resolve("digits", overrides)
    train = config["train"]
    assert (train["learning_rate"], train["warmup_steps"], train["grad_clip_norm"]) == (
        1e-3,
        7,
        0.5,
    )
    assert config["diffusion"]["model_mean_type"] == "v"
    assert not {"lr", "warmup", "grad_clip"} & set(train)
    notes = capsys.readouterr().err.splitlines()
    assert (
        notes[0] == "note: override: train.lr is now train.learning_rate (the old name still works)"
    )
    assert len(notes) == len(overrides)
    preset = tmp_path / "old.toml"
    preset.write_text(
        '[diffusion]\ntimesteps = 50\nvar_type = "fixed_small"\n[train]\nlr_decay = "cosine"\n'
    )
    _, config = cfg.resolve(str(preset))
    assert config["diffusion"]["num_timesteps"] == 50 and config["train"]["decay"] == "cosine"
    assert config["diffusion"]["model_var_type"] == "fixed_small"
    assert "note: config " in capsys.readouterr().err
    # An old name's errors name the key by its new name.
    with pytest.raises(schema.ConfigError, match=r"train\.learning_rate must be > 0"):
        cfg.resolve("digits", ["train.lr=0"])


def test_a_config_saved_under_old_key_names_reads_as_the_new(tmp_path):
    _, config = cfg.resolve("digits")
    (tmp_path / "config.json").write_text(json.dumps(_old_style(config)))
    run = RunDirectory(tmp_path)
    assert run.saved_config() == json.loads(json.dumps(config))
    assert run.check_config(config, schema.MAY_CHANGE, schema.DEFAULTS) is True
    assert schema.upgrade(config) == config  # a current config is left as it is


def test_unknown_preset_lists_the_presets():
    with pytest.raises(schema.ConfigError, match="digits"):
        cfg.resolve("imagenet")


# --------------------------------------------------------------------------------- run dirs
def test_run_directory_refuses_another_config(tmp_path):
    _, config = cfg.resolve("digits")
    run = RunDirectory(tmp_path / "run")
    assert run.check_config(config) is False
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert run.check_config(config) is True
    longer = cfg.resolve("digits", ["train.steps=9000", "run.log_every=5"])[1]
    assert run.check_config(longer, may_change=schema.MAY_CHANGE) is True
    other = cfg.resolve("digits", ["train.learning_rate=1e-3"])[1]
    with pytest.raises(RunConfigError, match=r"train\.learning_rate: 0\.0005 -> 0\.001"):
        run.check_config(other, may_change=schema.MAY_CHANGE)
    # A run saved before a key existed resumes when the key keeps its default, and only then.
    older = json.loads(json.dumps(config))
    del older["diffusion"]["min_snr_gamma"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(older))
    assert run.check_config(config, schema.MAY_CHANGE, schema.DEFAULTS) is True
    weighted = cfg.resolve("digits", ["diffusion.min_snr_gamma=5.0"])[1]
    with pytest.raises(RunConfigError, match=r"diffusion\.min_snr_gamma: 0\.0 -> 5\.0"):
        run.check_config(weighted, schema.MAY_CHANGE, schema.DEFAULTS)
    with pytest.raises(RunConfigError, match="<unset>"):
        run.check_config(config, schema.MAY_CHANGE)  # without defaults a missing key is a change


def test_a_foreign_directory_is_not_taken_over(tmp_path, data_dir, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert _train(tmp_path, data_dir, "train.steps=2") == 2
    assert "not a run directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_missing_dataset_fails_before_writing(tmp_path, capsys):
    code = train_main(
        ["--run-dir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "empty")]
        + ["data.dataset=mnist"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'mnist' is not prepared" in err and "download" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def long_run(tmp_path_factory, data_dir) -> Path:
    """16 steps in one go, with a sample grid at the end."""
    run = tmp_path_factory.mktemp("long")
    assert _train(run, data_dir, "train.steps=16", "run.num_samples=4") == 0
    return run


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory, data_dir) -> Path:
    """2 steps without labels (the digits preset is class-conditional): guidance is refused on it."""
    run = tmp_path_factory.mktemp("unconditional")
    assert _train(run, data_dir, "train.steps=2", "data.class_conditional=false") == 0
    return run


def test_extending_a_run_equals_one_long_run(tmp_path, data_dir, long_run, capsys):
    """Train 8 steps, then continue the same run to 16: the same state as 16 steps at once."""
    assert _train(tmp_path, data_dir, "train.steps=8") == 0
    assert _train(tmp_path, data_dir, "train.steps=16") == 0
    evaluations = [line for line in capsys.readouterr().out.splitlines() if "eval at" in line]
    assert len(evaluations) == 2 and all("(exact bound, 32 test images)" in e for e in evaluations)
    assert_same_checkpoints(tmp_path, long_run)
    assert not (tmp_path / "samples").exists()  # run.num_samples=0: no grids
    # The training curve of the two sessions is the one of the single run, minutes aside.
    extended, single = read_curve(tmp_path / CURVE_FILE), read_curve(long_run / CURVE_FILE)
    assert [r["step"] for r in extended] == [r["step"] for r in single] == [4, 8, 12, 16]
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in extended] == pytest.approx([r[key] for r in single], rel=1e-6)
    assert [r["bpd"] is not None for r in single] == [False, True, False, True]
    minutes = [r["minutes"] for r in extended]
    assert minutes == sorted(minutes) and minutes[0] > 0
    checkpoints = sorted(p.name for p in (long_run / "checkpoints").glob("*.index"))
    assert checkpoints == ["ckpt-12.index", "ckpt-16.index", "ckpt-8.index"]  # keep=3
    assert (long_run / "samples" / "step_00000016.png").is_file()
    assert list((long_run / "logs").iterdir())  # TensorBoard events
    model = load_model(long_run)
    assert model.step == 16
    assert model.generate(2, seed=0, method="ddim", steps=3).shape == (2, 8, 8, 1)


def test_a_run_saved_under_old_key_names_resumes(tmp_path, data_dir, long_run, capsys):
    """A run directory of before the renaming: its config.json resumes, and is rewritten."""
    run = tmp_path / "run"
    shutil.copytree(long_run, run)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(_old_style(saved)))
    assert _train(run, data_dir, "train.steps=16", "run.num_samples=4") == 0
    assert "resuming at step 16 of 16" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text()) == saved  # under the new names
    assert load_model(run).step == 16


def _cli(run_dir: Path, data_dir: str, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ddpm_tf.training",
        "--run-dir",
        str(run_dir),
        "--data-dir",
        data_dir,
        *SMALL,
        f"train.steps={steps}",
    ]


def _recorded_step(run_dir: Path) -> int:
    """The step of the newest checkpoint the run's state file names (0 if none): what a rerun
    resumes from. A checkpoint's files appear before the state file names it."""
    latest = tf.train.latest_checkpoint(run_dir / "checkpoints")
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, data_dir):
    """SIGKILL a run after its second checkpoint; the same command then finishes it exactly."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = tmp_path / "killed"
    command = _cli(killed, data_dir, steps=24)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while _recorded_step(killed) < 8:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_done = _recorded_step(killed)
    assert steps_done < 24, "the run finished before it could be killed"
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming at step {steps_done}" in resumed.stdout
    fresh = subprocess.run(
        _cli(tmp_path / "fresh", data_dir, steps=24),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert_same_checkpoints(killed, tmp_path / "fresh")


def test_sigterm_saves_the_step_and_stops(tmp_path, data_dir):
    """A scheduler's SIGTERM: the run finishes its step, checkpoints it, says so and exits 1."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [*_cli(tmp_path, data_dir, steps=4000), "run.checkpoint_every=1000"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (tmp_path / CURVE_FILE).exists() or len(read_curve(tmp_path / CURVE_FILE)) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = (stream.decode() for stream in proc.communicate(timeout=120))
    assert proc.returncode == 1, out + err
    stopped = int(err.split("stopped at step ")[1].split(" ")[0])
    assert "after a SIGTERM; saved a checkpoint of that step" in err
    assert 8 <= stopped < 4000 and stopped % 1000
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{stopped}")


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, capsys):
    code = _train(
        tmp_path,
        data_dir,
        "train.steps=40",
        "train.learning_rate=1e30",
        "train.warmup_steps=0",
        "train.grad_clip_norm=0.0",
        "run.checkpoint_every=1",
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "loss became NaN or infinite at step" in err
    failed = int(err.split("at step ")[1].split(".")[0])
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is None or int(latest.rsplit("-", 1)[1]) < failed
    if latest is not None:
        values = checkpoint_values(tmp_path)
        assert all(np.all(np.isfinite(v)) for v in values.values() if v.dtype.kind == "f")


def test_sample_cli_writes_a_grid_and_arrays(long_run, unconditional_run, tmp_path, capsys):
    out = tmp_path / "samples"
    args = [str(long_run), "--num-samples", "3", "--method", "ddim", "--steps", "4", "--seed", "5"]
    assert sample_main([*args, "--out", str(out)]) == 0
    saved = np.load(out / "samples.npz")
    assert saved["images"].shape == (3, 8, 8, 1) and saved["images"].dtype == np.uint8
    assert json.loads(str(saved["settings"]))["steps"] == "uniform4"  # the typed steps, as text
    assert (out / "samples.png").is_file()
    model = load_model(long_run)
    labels = every_class(3, model.num_classes)  # without --labels: the classes in turn
    seed = rng.fold_in(rng.as_seed(5), 0)
    expected = model.generate(3, seed=seed, method="ddim", steps=4, labels=labels)
    np.testing.assert_array_equal(saved["images"], unit_to_uint8(expected).numpy())
    assert sample_main([*args, "--out", str(out)]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    guided = tmp_path / "guided"  # guidance needs a class-conditional model
    unguided = [str(unconditional_run), *args[1:], "--guidance-scale", "2", "--out", str(guided)]
    assert sample_main(unguided) == 2
    assert "applies to class-conditional models" in capsys.readouterr().err
    assert not guided.exists()


def test_eval_refuses_guidance_on_an_unconditional_model_before_any_work(
    unconditional_run, tmp_path, data_dir, monkeypatch
):
    def unread(*args, **kwargs):
        raise AssertionError("the test split was read before the check")

    monkeypatch.setattr(evaluate_program, "load_arrays", unread)
    unguided = ["--num-samples", "4", "--guidance-scale", "2", "--out", str(tmp_path / "no")]
    assert eval_main([str(unconditional_run), "--data-dir", data_dir, *unguided]) == 2
    assert not (tmp_path / "no").exists()


def test_sample_cli_names_a_missing_model(tmp_path, capsys):
    assert sample_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a .keras file nor a run directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_corrupt_checkpoint_is_reported_not_trained_over(long_run, tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(long_run, run)
    data = next((run / "checkpoints").glob("ckpt-16.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert _train(run, data_dir, "train.steps=20") == 2
    err = capsys.readouterr().err
    assert "ckpt-16 cannot be restored" in err and "ckpt-12" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    with pytest.raises(CheckpointError, match="ckpt-16"):
        load_model(run)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, data_dir) -> Path:
    """A digits classifier from ddpm-classifier (2 epochs: features good enough to score)."""
    path = tmp_path_factory.mktemp("classifier") / "classifier.keras"
    args = ["--dataset", "sklearn_digits", "--data-dir", data_dir, "--epochs", "2"]
    assert classifier_main([*args, "--out", str(path)]) == 0
    return path


def test_eval_cli_reports_bits_per_dim_and_fid(long_run, tmp_path, data_dir, classifier):
    out = tmp_path / "eval"
    code = eval_main(
        [str(long_run), "--data-dir", data_dir, "--classifier", str(classifier)]
        + ["--bpd-examples", "8", "--bpd-batch", "4", "--num-samples", "40"]
        + ["--method", "ddim", "--steps", "5", "--out", str(out)]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 16 and report["dataset"] == "sklearn_digits"
    # The same bound computed directly, batch by batch.
    model = load_model(long_run)
    test, _ = load_arrays("sklearn_digits", "test", data_dir=data_dir, label_key=None)
    denoise = model.denoiser(labels=np.full(4, model.num_classes, np.int32))  # the null class
    direct = [
        model.diffusion.calc_bpd_loop(denoise, scale_to_unit(test[i : i + 4]))["total_bpd"]
        for i in (0, 4)
    ]
    # float32 sums of T terms, some of them huge for a barely trained model: oneDNN's kernel choice
    # moves them by ~1e-4 relative between graphs; a plumbing error (wrong images, padding counted)
    # moves them by far more.
    assert report["likelihood"]["bpd"] == pytest.approx(float(np.mean(direct)), rel=2e-3)
    assert report["likelihood"]["num_examples"] == 8
    # --no-ema and --xla reach the bound as they reach the samplers.
    raw = tmp_path / "raw"
    args = ["--bpd-examples", "4", "--bpd-batch", "4", "--num-samples", "0", "--no-ema", "--xla"]
    assert eval_main([str(long_run), "--data-dir", data_dir, *args, "--out", str(raw)]) == 0
    raw_bpd = json.loads((raw / "report.json").read_text())["likelihood"]["bpd"]
    direct = bits_per_dim(model, test[:4], 4, use_ema=False, jit_compile=True)["bpd"]
    assert raw_bpd == pytest.approx(direct, rel=1e-5)
    assert abs(raw_bpd - bits_per_dim(model, test[:4], 4)["bpd"]) > 1e-3  # not the EMA's
    quality = report["sample_quality"]
    assert quality["num_fake"] == 40 and quality["fid"] > quality["fid_floor"] > 0
    assert (out / "samples.png").is_file()
    # Several samplers in one call: the ddim 5-step row repeats the single run above exactly.
    compared = tmp_path / "compare"
    code = eval_main(
        [str(long_run), "--data-dir", data_dir, "--classifier", str(classifier)]
        + ["--bpd-examples", "0", "--num-samples", "40", "--out", str(compared)]
        + ["--compare", "ddim:3/5", "dpm_solver++:logsnr4", "ancestral:all"]
    )
    assert code == 0
    rows = json.loads((compared / "quality.json").read_text())
    assert [(r["method"], r["num_steps"]) for r in rows] == [
        ("ddim", 3),
        ("ddim", 5),
        ("dpm_solver++", 4),
        ("ancestral", 50),
    ]
    assert rows[1]["fid"] == pytest.approx(quality["fid"], rel=1e-6)
    assert (compared / "quality.png").stat().st_size > 10_000
    assert (compared / "samples_dpm_solver++_logsnr4.png").is_file()


# ------------------------------------------------------------------------ curve and FID in training
def test_a_resumed_curve_drops_the_steps_trained_again(tmp_path):
    """Rows after the checkpoint a run resumes from are dropped; minutes count on from the last kept."""
    path = tmp_path / CURVE_FILE
    first = TrainingCurve(path, start_step=0)
    for step in (4, 8, 12, 16, 20):
        first.record(step, {"loss": 1.0 / step, "not_a_column": 5.0})
    first.flush()
    assert [r["step"] for r in read_curve(path)] == [4, 8, 12, 16, 20]
    kept_minutes = read_curve(path)[2]["minutes"]
    resumed = TrainingCurve(path, start_step=12)  # the checkpoint of step 12
    assert [r["step"] for r in read_curve(path)] == [4, 8, 12]
    resumed.record(16, {"loss": 0.5})
    resumed.record(16, {"fid": 30.0})  # a second callback's values of the same step: one row
    resumed.flush()
    rows = read_curve(path)
    assert [r["step"] for r in rows] == [4, 8, 12, 16]
    assert rows[-1]["loss"] == 0.5 and rows[-1]["fid"] == 30.0 and rows[-1]["bpd"] is None
    assert rows[-1]["minutes"] >= kept_minutes
    assert rows[0]["loss"] == pytest.approx(0.25) and "not_a_column" not in rows[0]
    with open(path, "a") as f:  # a row cut short by a kill
        f.write("20,0.5")
    assert read_curve(path)[-1] == {"step": 20, "minutes": 0.5} | {
        k: None for k in rows[0] if k not in ("step", "minutes")
    }
    assert [r["step"] for r in read_curve(TrainingCurve(path, start_step=16).path)] == [
        4,
        8,
        12,
        16,
    ]


def test_training_logs_the_fid_of_its_samples(tmp_path, data_dir, classifier, capsys):
    run = tmp_path / "run"
    overrides = ["train.steps=8", "run.fid_samples=40", f"run.classifier={classifier}"]
    assert _train(run, data_dir, *overrides) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("eval at step 8"))
    assert "40 samples" in line
    logged = read_curve(run / CURVE_FILE)[-1]
    assert logged["step"] == 8 and 0 < logged["fid_floor"] < logged["fid"]
    assert f"fid {logged['fid']:.4g} (floor {logged['fid_floor']:.3g}" in line
    # The same score recomputed from the saved model: its samples against the test images.
    model = load_model(run)
    spec = SamplingSpec.from_dict(RunDirectory(run).saved_config()["sampling"])
    labels = every_class(40, model.num_classes)
    images = generate_uint8(model, 40, train_program.SAMPLE_SEED, spec, labels=labels)
    features = ClassifierFeatures(classifier)
    test, _ = load_arrays("sklearn_digits", "test", data_dir=data_dir, label_key=None)
    assert logged["fid"] == pytest.approx(fid_from_features(features(images), features(test)), 1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run.fid_samples=8"], "set run.classifier=PATH.keras"),
        (
            ["run.fid_samples=8", "run.classifier=missing.keras"],
            "run.classifier: classifier model 'missing.keras' does not exist",
        ),
        (
            ["run.fid_samples=1", "run.classifier=x.keras"],
            "run.fid_samples must be 0 (off) or >= 2",
        ),
        (["run.fid_samples=8", "run.classifier={wrong}"], "takes (28, 28, 1) images but this run"),
    ],
)
def test_bad_fid_settings_fail_before_anything_is_written(
    tmp_path, data_dir, capsys, overrides, message
):
    wrong = tmp_path / "wrong.keras"  # a classifier of another image shape
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.Dense(4, name="features")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(features)).save(wrong)
    run = tmp_path / "run"
    code = _train(run, data_dir, "train.steps=4", *(o.format(wrong=wrong) for o in overrides))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()


def test_a_cosine_decay_falls_to_zero_at_the_last_step(tmp_path, data_dir):
    assert _train(tmp_path, data_dir, "train.steps=8", "train.decay=cosine") == 0
    peak = RunDirectory(tmp_path).saved_config()["train"]["learning_rate"]
    rows = read_curve(tmp_path / CURVE_FILE)
    # after step s the optimizer's next rate: warm-up over 2 steps, then the decay over steps 2..8
    want = [peak * math.sin(0.5 * math.pi * (8 - s) / 6) ** 2 for s in (4, 8)]
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-5, abs=1e-12)
    assert rows[-1]["lr"] == 0.0


def test_a_bfloat16_run_trains_and_leaves_the_policy_as_it_was(tmp_path, data_dir):
    assert _train(tmp_path, data_dir, "train.steps=4", "train.mixed_precision=bfloat16") == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    model = load_model(tmp_path)
    assert model.network.compute_dtype == "bfloat16" and model.step == 4
    rows = read_curve(tmp_path / CURVE_FILE)
    assert rows[-1]["step"] == 4 and np.isfinite(rows[-1]["loss"])
