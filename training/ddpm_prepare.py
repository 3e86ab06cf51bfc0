"""``ddpm-prepare``: prepare a tfds dataset on a machine without network access.

Examples::

    ddpm-prepare fashion_mnist --data-dir ~/tensorflow_datasets
    ddpm-prepare mnist --data-dir data --source ~/mnist-idx
    ddpm-prepare mnist5k --data-dir data

``mnist`` and ``fashion_mnist`` are built by tfds' own builders from the four idx files
(``train-images-idx3-ubyte[.gz]`` etc.) in ``--source``; for ``fashion_mnist`` it defaults to
``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``).
``sklearn_digits`` and ``mnist5k`` come from installed Python packages and take no source.
Afterwards ``tfds.load(NAME, data_dir=DIR, download=False)`` works offline.
"""

from __future__ import annotations

import argparse
import os
import time

from ddpm_tf import cli
from ddpm_tf.datasets import EMBEDDED_DATASETS, IDX_DATASETS, prepare

__all__ = ["main"]


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-prepare", "Prepare a tensorflow-datasets dataset from local files, without network."
    )
    parser.add_argument("name", choices=[*IDX_DATASETS, *EMBEDDED_DATASETS], help="dataset")
    parser.add_argument("--data-dir", required=True, help="tfds data directory to write into")
    parser.add_argument(
        "--source",
        default=None,
        help="directory with the four idx files (mnist, fashion_mnist only; fashion_mnist "
        "defaults to /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild the dataset if it is already prepared"
    )
    return parser


def run(args: argparse.Namespace) -> None:
    """Prepares the dataset and prints what was written."""
    start = time.perf_counter()
    builder = prepare(args.name, args.data_dir, source_dir=args.source, overwrite=args.overwrite)
    splits = ", ".join(
        f"{split} {info.num_examples}" for split, info in builder.info.splits.items()
    )
    print(
        f"Prepared {builder.info.full_name} in {os.fspath(builder.data_dir)} "
        f"({splits} examples) in {time.perf_counter() - start:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-prepare; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
