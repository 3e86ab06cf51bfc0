"""The measured choice of TensorFlow's oneDNN kernels: the rule, the cache, who wins, and (slow) a
real measuring child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from ddpm_tf import onednn
from ddpm_tf.training import ddpm_onednn


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder and an environment in which `apply` would decide."""
    monkeypatch.setenv("DDPM_TF_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv(onednn.ENV, raising=False)
    monkeypatch.delenv(onednn.TUNE_ENV, raising=False)
    monkeypatch.setattr(onednn, "_tensorflow_loaded", lambda: False)
    return tmp_path


def fake_children(monkeypatch, ms: dict[str, float | None]) -> list[str]:
    """Replaces the measuring children by fixed times; returns the settings they were run with."""
    runs = []

    def time_child(setting):
        runs.append(setting)
        value = ms[setting]
        return value, "ok" if value is not None else "failed with exit code 1: boom"

    monkeypatch.setattr(onednn, "_time_child", time_child)
    return runs


@pytest.mark.parametrize(
    "on, off, expected",
    [(100.0, 120.0, "1"), (120.0, 100.0, "0"), (100.0, 103.0, None), (None, 100.0, None)],
)
def test_the_faster_setting_wins_only_by_more_than_the_margin(on, off, expected):
    assert onednn.decide({"1": on, "0": off}) == expected


def test_first_use_measures_caches_and_sets_the_variable(cache, monkeypatch, capsys):
    runs = fake_children(monkeypatch, {"0": 200.0, "1": 100.0})
    why = onednn.apply()
    assert "timing TensorFlow's oneDNN kernels" in capsys.readouterr().err  # the pause is said
    assert os.environ[onednn.ENV] == "1" and why.startswith(f"{onednn.ENV}=1")
    assert sorted(runs) == ["0", "1"]
    record = json.loads(onednn.cache_file().read_text())
    assert record["setting"] == "1" and record["ms_per_step"] == {"0": 200.0, "1": 100.0}
    assert onednn.cache_file().parent == cache

    monkeypatch.delenv(onednn.ENV)
    runs.clear()
    assert onednn.apply().startswith(f"{onednn.ENV}=1")
    assert runs == []  # the second process reads the cache
    assert capsys.readouterr().err == ""
    assert ddpm_onednn.main([]) == 0  # how this process decided
    assert capsys.readouterr().out.startswith(f"{onednn.ENV}=1, measured off 200 ms, on 100 ms")


def test_a_tie_keeps_tensorflows_default(cache, monkeypatch):
    fake_children(monkeypatch, {"0": 100.0, "1": 101.0})
    assert onednn.apply().startswith("TensorFlow's default")
    assert onednn.ENV not in os.environ


def test_a_failed_child_keeps_the_default_and_says_why(cache, monkeypatch):
    fake_children(monkeypatch, {"0": 100.0, "1": None})
    why = onednn.apply()
    assert onednn.ENV not in os.environ
    assert "on failed with exit code 1: boom" in why


@pytest.mark.parametrize(
    "failed, age, again",
    [
        (True, 3600.0, False),  # failed an hour ago: TensorFlow's default, no new pause
        (True, onednn.RETRY_AFTER + 1.0, True),  # failed a day ago: tried again
        (True, None, True),  # failed, with no readable time
        (False, 30 * onednn.RETRY_AFTER, False),  # a good measurement stays
    ],
)
def test_a_failed_measurement_is_tried_again_a_day_later(cache, monkeypatch, failed, age, again):
    record = {
        "setting": None if failed else "1",
        "ms_per_step": {"0": 100.0, "1": None if failed else 50.0},
        "failed": {"1": "timed out after 300 s"} if failed else {},
    }
    if age is not None:
        then = onednn.time.localtime(onednn.time.time() - age)
        record["measured"] = onednn.time.strftime(onednn.TIME_FORMAT, then)
    onednn.cache_file().write_text(json.dumps(record))
    runs = fake_children(monkeypatch, {"0": 200.0, "1": 100.0})
    why = onednn.apply()
    assert sorted(runs) == (["0", "1"] if again else [])
    if again:
        assert (
            why.startswith(f"{onednn.ENV}=1")
            and onednn.due_again(json.loads(onednn.cache_file().read_text())) is False
        )
    else:
        assert why.startswith(f"{onednn.ENV}=1" if not failed else "TensorFlow's default")


def test_a_damaged_cache_is_measured_again(cache, monkeypatch):
    onednn.cache_file().write_text('{"setting": "1", "ms_per')
    runs = fake_children(monkeypatch, {"0": 100.0, "1": 200.0})
    assert onednn.apply().startswith(f"{onednn.ENV}=0")
    assert sorted(runs) == ["0", "1"]


@pytest.mark.parametrize(
    "env, loaded, expected",
    [
        ({onednn.ENV: "0"}, False, "set by the user"),
        ({onednn.TUNE_ENV: "0"}, False, "DDPM_TF_TUNE=0"),
        ({}, True, "TensorFlow was imported before ddpm_tf"),
    ],
)
def test_nothing_is_measured_when_the_choice_is_not_ours(cache, monkeypatch, env, loaded, expected):
    runs = fake_children(monkeypatch, {"0": 100.0, "1": 200.0})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(onednn, "_tensorflow_loaded", lambda: loaded)
    assert expected in onednn.apply()
    assert runs == [] and not onednn.cache_file().exists()
    assert os.environ.get(onednn.ENV) == env.get(onednn.ENV)


@pytest.mark.parametrize("differs", [True, False])
def test_tensorflow_loaded_first_warns_when_it_runs_the_slower_setting(cache, monkeypatch, differs):
    from ddpm_tf import compat  # this test process has TensorFlow loaded

    running = "1" if compat.onednn_enabled() else "0"
    measured = {"0": "1", "1": "0"}[running] if differs else running
    onednn.cache_file().write_text(
        json.dumps({"setting": measured, "ms_per_step": {measured: 100.0, running: 150.0}})
    )
    runs = fake_children(monkeypatch, {"0": 100.0, "1": 200.0})
    monkeypatch.setattr(onednn, "_tensorflow_loaded", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "TensorFlow was imported before ddpm_tf" in onednn.apply()
    said = [str(w.message) for w in caught if "oneDNN" in str(w.message)]
    assert runs == [] and onednn.ENV not in os.environ  # nothing measured, nothing set
    if differs:
        assert len(said) == 1
        assert f"start Python with {onednn.ENV}={measured}" in said[0]
        assert "Import ddpm_tf before TensorFlow" in said[0]
    else:
        assert said == []


def test_an_unwritable_cache_keeps_the_default(cache, monkeypatch):
    fake_children(monkeypatch, {"0": 100.0, "1": 200.0})
    blocker = cache / "file"
    blocker.write_text("")
    monkeypatch.setenv("DDPM_TF_KERNEL_CACHE", str(blocker / "below"))
    assert "cannot be written" in onednn.apply()
    assert onednn.ENV not in os.environ


def test_the_cache_is_per_cpu(cache, monkeypatch):
    first = onednn.cache_file()
    monkeypatch.setattr(onednn, "cpu_identity", lambda: "model name: another cpu")
    assert onednn.cache_file() != first


def test_a_cpu_capped_to_fewer_instructions_is_measured_apart(cache, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    whole = onednn.cache_file()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = onednn.cache_file()
    assert capped != whole
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert onednn.cache_file() not in (whole, capped)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["0", "1"])
def test_a_measuring_child_times_a_train_step(setting, tmp_path):
    env = dict(os.environ, **{onednn.ENV: setting})
    done = subprocess.run(
        [sys.executable, "-c", onednn._CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ms, enabled = done.stdout.strip().splitlines()[-1].split()
    assert enabled == setting  # the child timed the path it was asked to time
    assert 1.0 < float(ms) < 60_000.0


def test_a_child_on_the_other_path_is_no_measurement(monkeypatch):
    class Done:
        returncode, stdout, stderr = 0, "123.0 1\n", ""

    monkeypatch.setattr(onednn.subprocess, "run", lambda *args, **kwargs: Done())
    assert onednn._time_child("1") == (123.0, "ok")
    ms, note = onednn._time_child("0")
    assert ms is None and "ignored TF_ENABLE_ONEDNN_OPTS=0 (oneDNN on)" in note
