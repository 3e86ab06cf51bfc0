"""``ddpm-classifier``: train the feature classifier for FID/KID on a tfds dataset, or (--noisy)
a classifier of noisy images for classifier guidance of a ddpm-train run.

    ddpm-classifier --dataset sklearn_digits --out runs/digits_classifier.keras
    ddpm-classifier --noisy runs/digits --steps 2000      # ddpm_classifier_noisy.py

loads the train and test splits as uint8 arrays, trains a ``ddpm_tf.classifier.ImageClassifier``
(seeded), saves it to ``--out`` and writes its metrics (test accuracy among them) as JSON next to
it (``PATH.json``). Nothing is downloaded unless ``--download`` is passed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddpm_tf import cli
from ddpm_tf.classifier import train_classifier
from ddpm_tf.data import load_arrays, num_classes
from ddpm_tf.errors import InputError
from ddpm_tf.training import ddpm_classifier_noisy as noisy

__all__ = ["main"]


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-classifier",
        "Train the classifier whose features ddpm-eval uses for FID and KID, or (--noisy) a "
        "classifier of noisy images that guides a run's sampling.",
    )
    parser.add_argument("--dataset", help="tfds name, e.g. sklearn_digits, mnist")
    parser.add_argument("--data-dir", default=None, help="tfds data directory")
    parser.add_argument("--download", action="store_true", help="allow tfds to download")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--epochs", type=int, help="passes over the data (default 20)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    cli.add_seed(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="model file PATH.keras; --noisy: the classifier's run directory (default "
        "RUN_DIR/noisy_classifier)",
    )
    noisy.add_arguments(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing PATH.keras and PATH.json"
    )
    return parser


def train(args: argparse.Namespace) -> None:
    """Trains, saves the classifier and its metrics (PATH.json); checks the input first."""
    if args.noisy is not None:
        if args.dataset is not None:
            raise InputError("--noisy trains on the run's own dataset: leave out --dataset.")
        return noisy.train(args)
    if args.steps is not None:
        raise InputError("--steps is for --noisy; the feature classifier trains for --epochs.")
    if args.dataset is None or args.out is None:
        raise InputError("--dataset and --out are required (or --noisy RUN_DIR).")
    args.epochs = 20 if args.epochs is None else args.epochs
    if not isinstance(args.seed, int):
        raise InputError(
            "--seed takes one int here (the seed of Keras' initialisers and shuffling)"
        )
    if args.out.suffix != ".keras":
        raise InputError(f"--out must end with .keras, got {str(args.out)!r}")
    existing = [str(p) for p in (args.out, args.out.with_suffix(".json")) if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing} exist; pass --overwrite or another --out.")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if not args.learning_rate > 0:
        raise InputError(f"--learning-rate must be > 0, got {args.learning_rate}")
    load = dict(data_dir=args.data_dir, download=args.download)
    train_split = load_arrays(args.dataset, args.train_split, **load)
    test = load_arrays(args.dataset, args.test_split, **load)
    classes = num_classes(args.dataset, data_dir=args.data_dir)
    model, metrics = train_classifier(
        *train_split,
        classes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        val=(test[0], test[1]),
        learning_rate=args.learning_rate,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    report = {
        "dataset": args.dataset,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "image_shape": list(model.image_shape),
        "num_classes": model.num_classes,
        "feature_dim": model.feature_dim,
        "seed": args.seed,
        "test_accuracy": metrics["val_accuracy"],
        **metrics,
        "model": str(args.out),
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"test accuracy {metrics['val_accuracy']:.4f} on {metrics['num_val']} images; "
        f"saved {args.out} and {json_path}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-classifier; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
