"""``ddpm-onednn``: which of TensorFlow's CPU code paths (oneDNN on or off) this machine uses.

Examples::

    ddpm-onednn              # the choice and how it was made (measured times, cache file)
    ddpm-onednn --measure    # time both paths again and cache the faster

The choice is made once per machine by ``ddpm_tf.onednn`` (docs/training.md, "oneDNN on or off,
measured"); a process keeps the setting it started with, so a new measurement applies to the
processes started after it.
"""

from __future__ import annotations

import argparse

from ddpm_tf import cli, onednn

__all__ = ["main"]


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-onednn", "Which of TensorFlow's CPU code paths (oneDNN on or off) this machine uses."
    )
    parser.add_argument("--measure", action="store_true", help="measure again and cache it")
    return parser


def run(args: argparse.Namespace) -> None:
    """Prints this process's setting, or measures again and prints the new choice."""
    if not args.measure:
        print(onednn.status())
        return
    record = onednn.choice(remeasure=True)
    setting = record["setting"] or "TensorFlow's default"
    print(f"measured: {onednn.describe(record)}; setting {setting}")
    print("(this process keeps the setting it started with)")


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-onednn; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
