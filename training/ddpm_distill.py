"""`ddpm-distill`: a trained run made into a sampler of a few network calls (distillation).

    ddpm-distill runs/digits --steps 4 --run-dir runs/digits_4steps
    ddpm-distill runs/fashion_mnist --steps 2 --data-dir ~/tfds --run-dir runs/fashion_2steps \\
        distill.round_steps=2000 run.fid_samples=1000 run.classifier=runs/fashion_classifier.keras

The student starts as the teacher run's EMA weights and halves its DDIM steps each round, from
`distill.teacher_steps` (default: the student's steps doubled up to 64) down to `--steps`
(`ddpm_tf.distillation`). It is a training run like ddpm-train's, with the same machinery: the
run directory (config.json with a [distill] section, checkpoints, curve.csv, logs/, samples/), one
writer, exact resume on rerun, progress with ETA, SIGTERM checkpoints, several workers
(`train.strategy`). Its [train] keys start from the teacher's with distillation's learning rate,
restarted each round (linear decay to 0), and every `KEY=VALUE` override applies on top.
`distill.round_steps` is the steps of every round, or a list of each round's in turn
(`distill.round_steps=[500,1500,3000]`: the later rounds are the harder ones); `train.steps` is
their sum. The run evaluates (`run.fid_samples`) and draws its grids at the end of each round,
and also every `run.eval_every` / `run.sample_every` steps if those are given. The data are the
teacher's.

At the end of each round the run keeps that round's student in `students/steps<N>.keras`, an
ordinary model that samples in N calls; the run directory itself samples in `--steps` calls.
ddpm-sample, ddpm-eval and ddpm-export read either and sample as the student does unless told.

`distill.method=consistency` trains by consistency distillation instead: one round of
`distill.round_steps` on the grid of `distill.teacher_steps` / 2 steps, its one student sampling
in `--steps` calls (and in any other number, `--steps trailingN`); docs/sampling.md measures the
two methods.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import keras

from ddpm_tf import cli
from ddpm_tf.config import DISTILL_DEFAULTS, finish, set_key
from ddpm_tf.distillation import (
    DistillationModel,
    Rounds,
    default_teacher_steps,
    plan,
    student_file,
    student_spec,
)
from ddpm_tf.errors import InputError
from ddpm_tf.keras_files import save_keras_atomic
from ddpm_tf.runs import CHECKPOINT_DIR, MODEL_FILE, RunDirectory, load_model
from ddpm_tf.training import ddpm_train_run
from ddpm_tf.training.ddpm_train_presets import parse_override

# The [train] keys a distillation starts from (over the teacher's): the learning rate restarts
# each round and decays linearly to 0 at its end (Salimans & Ho 2022).
TRAIN_DEFAULTS = {"learning_rate": 1e-4, "warmup_steps": 0, "decay": "linear"}


class _Parser(cli.ProgramParser):
    """RUN_DIR first, then flags and KEY=VALUE overrides in any order."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def build_parser() -> cli.ProgramParser:
    parser = _Parser(
        "ddpm-distill",
        "Distill a trained run into a sampler of --steps network calls (progressive "
        "distillation: each round halves the steps; or distill.method=consistency).",
    )
    parser.add_argument("teacher", metavar="RUN_DIR", help="the trained run (ddpm-train)")
    parser.add_argument(
        "--steps", type=int, required=True, help="the student's sampling steps, e.g. 1, 2, 4, 8"
    )
    parser.add_argument(
        "--run-dir", help="the student's run directory (default runs/<RUN_DIR's name>_<N>steps)"
    )
    parser.add_argument("--data-dir", help="tfds data directory of the teacher's dataset")
    parser.add_argument(
        "--download", action="store_true", help="let tfds download the dataset if missing"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. distill.round_steps=2000 train.learning_rate=5e-5",
    )
    return parser


def teacher_config(teacher: Path) -> dict:
    """The teacher run's config, checked to be a finished ddpm-train run (not a distillation)."""
    run = RunDirectory(teacher)
    config = run.saved_config()
    if config is None or not (teacher / MODEL_FILE).is_file():
        raise InputError(
            f"{teacher} is not a run directory of ddpm-train (no config.json and model.json); "
            "pass the directory of a trained run."
        )
    if run.latest_checkpoint() is None:
        raise InputError(f"{teacher} holds no checkpoint in {CHECKPOINT_DIR}/ yet: train it first.")
    if "distill" in config:
        raise InputError(
            f"{teacher} is a distillation run; distill its teacher ({config['distill']['teacher']})"
            " with the --steps you want (the rounds pass through every halving)."
        )
    return config


def distill_config(args: argparse.Namespace) -> tuple[str, dict]:
    """(name, config) of the student run: the teacher's config with a [distill] section,
    distillation's [train] keys, the student's [sampling] and the overrides."""
    teacher = Path(args.teacher)
    config = copy.deepcopy(teacher_config(teacher))
    config["distill"] = {
        **DISTILL_DEFAULTS,
        "teacher": str(teacher.resolve()),
        "student_steps": args.steps,
        "teacher_steps": 0,
    }
    config["train"].update(TRAIN_DEFAULTS)
    config["run"]["bpd_examples"] = 0  # a student is a sampler, not a density model
    given = set()
    for item in args.overrides:
        key, value = parse_override(item)
        given.add(key)
        if key in ("train.steps", "distill.teacher", "distill.student_steps"):
            raise InputError(
                f"{key} is set by ddpm-distill (RUN_DIR, --steps, and rounds times "
                "distill.round_steps); change those instead."
            )
        set_key(config, key, value)
    distill = config["distill"]
    distill["teacher_steps"] = distill["teacher_steps"] or default_teacher_steps(args.steps)
    halving = plan(
        config["diffusion"]["num_timesteps"],
        distill["student_steps"],
        distill["teacher_steps"],
        distill["round_steps"],
        distill["method"],
    )
    config["train"]["steps"] = halving.total_steps
    for key in ("sample_every", "eval_every"):  # the rounds' ends, unless asked for more often
        if f"run.{key}" not in given:
            config["run"][key] = halving.total_steps
    bounds = [config["sampling"][k] for k in ("clip_denoised", "dynamic_threshold")]
    config["sampling"] = student_spec(distill["student_steps"], *bounds).to_dict()
    name = f"{teacher.name}_{args.steps}steps"
    return name, finish(config, dataset_given=bool(config["data"]["dataset"]))


def keeper(run: RunDirectory) -> Callable[[DistillationModel], None]:
    """The end of a round: its student kept in students/steps<N>.keras (by the chief)."""

    def keep(model: DistillationModel) -> None:
        if not run.chief:
            return
        path = student_file(run.path, model.steps_of_round(model.round))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_keras_atomic(model.student(), path, "the student")

    return keep


def prepare(model: keras.Model, run: RunDirectory, start: int) -> list[keras.callbacks.Callback]:
    """At a fresh start, the student (and teacher) take the teacher run's EMA weights."""
    if start == 0:
        teacher = load_model(model.teacher)
        model.initialize_from(teacher)
        if run.chief:
            print(f"student initialised from {model.teacher} at step {teacher.step}", flush=True)
    return [Rounds(keeper(run))]


def distill(args: argparse.Namespace) -> int:
    return ddpm_train_run.train(args, distill_config(args), prepare)


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-distill; returns the exit code (0 done, 1 failed, 2 bad input, 3 non-finite)."""
    return cli.main(build_parser(), distill, argv)


if __name__ == "__main__":
    raise SystemExit(main())
