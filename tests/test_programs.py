"""The programs behave alike: one error line, the documented exit codes, no TensorFlow start-up lines.

Each console script is run as a user runs it, in its own process, from the virtual environment's
`bin/` directory, with an input it must refuse.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from helpers import program_modules

from ddpm_tf import DiffusionModel, GaussianDiffusion, cli, get_beta_schedule, unet
from ddpm_tf.errors import InputError
from ddpm_tf.runs import RunDirectory
from ddpm_tf.sampling.spec import SamplingSpec

BIN = Path(sys.executable).parent
# What TensorFlow's C++ start-up writes: absl's notice, glog-style lines ("I0000 00:00:... file.cc:N]")
# and the cpu_feature_guard continuation.
TF_LOG_LINE = re.compile(
    r"absl::InitializeLog|^[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+\.cc:\d+\]|rebuild TensorFlow",
    re.M,
)


def _run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [str(BIN / program), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory) -> Path:
    """A run directory whose only checkpoint has a truncated data file."""
    keras.utils.set_random_seed(0)
    network = unet.from_preset("tiny_8", ch=16, num_groups=4)
    model = DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", 50)))
    model.compile()
    run = RunDirectory(tmp_path_factory.mktemp("corrupt") / "run")
    run.open({"note": "a test run"}, model)
    run.save(model)
    for data in run.checkpoint_dir.glob("*.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    return run.path


# (program, arguments, what the error line names)
BAD_INPUTS = [
    ("ddpm-train", ["train.steps=0"], "train.steps must be >= 1"),
    ("ddpm-sample", ["missing_run", "--out", "out"], "missing_run"),
    ("ddpm-eval", ["missing_run", "--out", "out", "--dataset", "sklearn_digits"], "missing_run"),
    ("ddpm-classifier", ["--dataset", "sklearn_digits", "--out", "model.h5"], ".keras"),
    ("ddpm-prepare", ["mnist", "--data-dir", "d", "--source", "missing_dir"], "missing_dir"),
    ("ddpm-export", ["missing_run", "--out", "out", "--eta", "2"], "eta"),
]


@pytest.mark.parametrize(("program", "args", "named"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_no_tensorflow_lines(tmp_path, program, args, named):
    result = _run(program, *args, cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == cli.EXIT_BAD_INPUT, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: error: ") and named in lines[0]
    assert not TF_LOG_LINE.search(result.stderr)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_corrupt_checkpoint_given_to_export_is_one_line(tmp_path, corrupt_run):
    result = _run("ddpm-export", str(corrupt_run), "--out", "exported", cwd=tmp_path)
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert result.stderr.count("\n") == 1 and "cannot be restored" in result.stderr
    assert not (tmp_path / "exported").exists()


def test_verbose_shows_tensorflow_start_up_lines(tmp_path):
    result = _run("ddpm-sample", "missing_run", "--out", "out", "--verbose", cwd=tmp_path)
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert TF_LOG_LINE.search(result.stderr)


@pytest.mark.parametrize("program", [b[0] for b in BAD_INPUTS])
def test_help_states_the_exit_codes(program):
    parser = _parser(program)
    assert cli.EXIT_CODES in parser.format_help() and "--verbose" in parser.format_help()


def _parser(program: str):
    return program_modules()[program].build_parser()


def test_one_flag_per_idea_across_programs():
    flags = {p: set(_parser(p)._option_string_actions) for p, _, _ in BAD_INPUTS}
    for program in ("ddpm-sample", "ddpm-eval", "ddpm-export"):
        assert {"--num-samples", "--seed", "--method", "--steps", "--eta"} <= flags[program]
    assert "--guidance-scale" in flags["ddpm-sample"] and "--guidance-scale" in flags["ddpm-export"]
    assert "--seed" in flags["ddpm-classifier"]
    retired = {"--num", "--samples", "--guidance", "--sampler", "--raw-weights"}
    assert not retired & set().union(*flags.values())


def test_every_sampling_setting_has_one_flag_and_round_trips():
    assert set(cli.SAMPLING_FLAGS) == set(SamplingSpec.fields())
    parser = cli.ProgramParser("prog", "test")
    default = SamplingSpec(method="ddim", steps=100)
    cli.add_sampling_arguments(parser, default)
    assert cli.sampling_spec(parser.parse_args([]), default) == default
    args = parser.parse_args(
        ["--method", "ddim", "--steps", "ddim25", "--eta", "0.5", "--no-clip", "--no-ema"]
        + ["--noise-source", "portable", "--xla", "--dynamic-threshold", "0.99"]
    )
    assert cli.sampling_spec(args, default) == SamplingSpec(
        method="ddim",
        steps="ddim25",
        eta=0.5,
        clip_denoised=False,
        dynamic_threshold=0.99,
        use_ema=False,
        noise_source="portable",
        jit_compile=True,
    )
    args = parser.parse_args(
        ["--method", "dpm_solver++", "--steps", "logsnr20", "--solver-order", "1"]
    )
    assert cli.sampling_spec(args, default) == SamplingSpec(
        "dpm_solver++", "logsnr20", solver_order=1
    )


def test_unexpected_errors_are_one_line_exit_1(capsys):
    parser = cli.ProgramParser("prog", "test")

    def body(args):
        raise RuntimeError("singular\nmatrix")

    assert cli.run("prog", body, parser.parse_args([])) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: singular matrix" in err and "--verbose" in err


def test_verbose_shows_the_traceback_of_bad_input_too(capsys):
    """The package's own input errors are exit 2 and one line; --verbose shows where they came from."""
    parser = cli.ProgramParser("prog", "test")

    def body(args):
        raise InputError("bad shape")

    assert cli.run("prog", body, parser.parse_args([])) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "prog: error: bad shape\n"
    assert cli.run("prog", body, parser.parse_args(["--verbose"])) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and "in body" in err and err.endswith("prog: error: bad shape\n")


def test_a_value_error_from_a_library_is_a_failure_not_bad_input(capsys):
    """A bare ValueError raised deep inside TensorFlow is not the user's input error: exit 1, one
    line that says to rerun with --verbose."""
    parser = cli.ProgramParser("prog", "test")

    def body(args):
        raise ValueError("Shapes (2, 3) and (3, 2) are incompatible")

    assert cli.run("prog", body, parser.parse_args([])) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: Shapes" in err and "--verbose" in err
