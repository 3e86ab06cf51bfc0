"""`ddpm-train`: train a DDPM from a named config, checkpointing so that a rerun resumes exactly.

    ddpm-train                                   # the embedded digits (time: docs/benchmarks.md)
    ddpm-train --config fashion_mnist --data-dir ~/tfds train.steps=20000 run.sample_every=5000
    ddpm-train --config my_run.toml --run-dir runs/mine

Rerunning the same command continues from the newest checkpoint of the run directory; a run
directory holding a run with another config is refused (only `train.steps`, the `run.*`
bookkeeping and the `[sampling]` of the grids may change, so a finished run can be extended).
A run directory has one writer: a second `ddpm-train` on a directory that a live process trains
is refused (exit code 2, naming that process) before it writes anything; ddpm-sample, ddpm-eval
and ddpm-export may read the run meanwhile (its newest complete checkpoint). A file that cannot be
written (a full disk) stops the run with exit code 1 and keeps the previous checkpoint.

Several machines: every worker runs the same command with `train.strategy=multi_worker` and its
own TF_CONFIG. Only the chief writes the run directory and prints progress; a SIGTERM to any
worker makes all of them save a checkpoint and stop, and rerunning the commands resumes.
"""

from __future__ import annotations

import argparse

from ddpm_tf import cli
from ddpm_tf.training import ddpm_train_run
from ddpm_tf.training.ddpm_train_presets import preset_names, resolve


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-train",
        "Train a denoising diffusion model. With no arguments: the embedded digits dataset, no "
        "network needed.",
    )
    parser.add_argument(
        "--config",
        help=f"a preset ({', '.join(preset_names())}) or a .toml file (default: digits, or "
        "folder64 with --images)",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="train on your own PNG/JPEG files in DIR (recursively; sets data.images)",
    )
    parser.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    parser.add_argument("--data-dir", help="tfds data directory (default: tfds' own)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let tfds download and prepare the dataset if it is not on disk",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=100"
    )
    return parser


def resolve_args(args: argparse.Namespace) -> tuple[str, dict]:
    """(name, config) of the command line: --config (digits, or folder64 with --images), then
    the overrides, then --images."""
    overrides = [*args.overrides, *([f"data.images={args.images!r}"] if args.images else [])]
    return resolve(args.config or ("folder64" if args.images else "digits"), overrides)


def train(args: argparse.Namespace) -> int:
    """Trains (or resumes) the run of the command line; see the module docstring."""
    return ddpm_train_run.train(args, resolve_args(args))


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-train; returns the exit code (0 done, 1 failed, 2 bad input, 3 non-finite loss)."""
    return cli.main(build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
