"""`ddpm-eval`: test-set bits/dim from the full variational bound, and FID/KID of samples.

    ddpm-eval runs/digits --classifier runs/digits_classifier.keras --out runs/digits/eval
    ddpm-eval runs/cifar10 --inception-weights inception_v3_..._notop.h5 --samples 10000 \
        --sampler ddim --steps 100 --out runs/cifar10/eval

Bits/dim is the exact bound `calc_bpd_loop` sums over all T steps (L_T + sum L_t + L_0) with the
EMA weights, averaged over test images. FID and KID compare generated images with the test split
on the features of the project's classifier (`ddpm-classifier`) or of Inception-v3 (weights file
supplied by the user); beside each score stands the real-vs-real floor: training images of the
same count scored against the test split, what a perfect generator would get at this sample size.
Writes `report.json` and `samples.png` to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddpm_tf.data import DatasetNotPreparedError, load_arrays, scale_to_unit  # noqa: E402
from ddpm_tf.evaluation import sample_quality  # noqa: E402
from ddpm_tf.features import ClassifierFeatures, InceptionFeatures  # noqa: E402
from ddpm_tf.images import save_grid  # noqa: E402
from ddpm_tf.runs import CheckpointError, RunDirectory, load_model  # noqa: E402
from training.sample import add_sampler_arguments, generate_uint8, sampler_options  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ddpm-eval", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory written by ddpm-train, or a .keras file")
    parser.add_argument("--out", required=True, help="directory for report.json and samples.png")
    parser.add_argument("--dataset", help="tfds name (default: the run's)")
    parser.add_argument("--split", help="test split (default: the run's data.test_split)")
    parser.add_argument("--train-split", help="split for the floor (default: the run's)")
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument(
        "--bpd-examples", type=int, default=-1, help="test images for bits/dim (-1: all, 0: skip)"
    )
    parser.add_argument("--bpd-batch", type=int, default=250)
    parser.add_argument(
        "--samples", type=int, default=-1, help="images to generate (-1: as many as test images)"
    )
    features = parser.add_mutually_exclusive_group()
    features.add_argument("--classifier", help="a .keras classifier from ddpm-classifier")
    features.add_argument("--inception-weights", help="InceptionV3 no-top weights (.h5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    add_sampler_arguments(parser)
    return parser.parse_args(argv)


def bits_per_dim(model, images: np.ndarray, batch: int) -> dict:
    """Mean of the exact bound over `images` (uint8), with its parts, in bits/dim."""
    denoise = model.denoiser(
        labels=None if model.num_classes is None else tf.fill([batch], model.num_classes)
    )
    totals, priors, decoders = [], [], []
    for start in range(0, len(images), batch):
        x = scale_to_unit(images[start : start + batch])
        if x.shape[0] < batch:  # pad the last batch so one compiled loop serves all
            x = tf.concat([x, tf.zeros([batch - x.shape[0], *x.shape[1:]])], 0)
        out = model.diffusion.calc_bpd_loop(denoise, x)
        keep = min(batch, len(images) - start)
        totals.append(out["total_bpd"].numpy()[:keep])
        priors.append(out["prior_bpd"].numpy()[:keep])
        decoders.append(out["vb"].numpy()[:keep, 0])
    total = np.concatenate(totals)
    return {
        "bpd": float(total.mean()),
        "bpd_stderr": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else None,
        "prior_bpd": float(np.concatenate(priors).mean()),
        "decoder_bpd": float(np.concatenate(decoders).mean()),
        "num_examples": len(total),
    }


def evaluate(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    if (out / "report.json").exists() and not args.overwrite:
        raise ValueError(f"{out / 'report.json'} exists; pass --overwrite or another --out.")
    data_cfg = (RunDirectory(args.model).saved_config() or {}).get("data", {})
    dataset = args.dataset or data_cfg.get("dataset")
    if dataset is None:
        raise ValueError("--dataset is needed when the model is not a run directory.")
    split = args.split or data_cfg.get("test_split", "test")
    train_split = args.train_split or data_cfg.get("train_split", "train")
    size = data_cfg.get("image_size") or None
    if args.classifier:
        extractor = ClassifierFeatures(args.classifier)
    elif args.inception_weights:
        extractor = InceptionFeatures(args.inception_weights)
    else:
        extractor = None
    load = dict(data_dir=args.data_dir, label_key=None, image_size=size)
    test, _ = load_arrays(dataset, split, **load)
    model = load_model(args.model)
    report: dict = {
        "model": str(args.model),
        "step": int(model.step_counter.numpy()),
        "dataset": dataset,
        "split": split,
    }
    began = time.perf_counter()
    if args.bpd_examples != 0:
        count = len(test) if args.bpd_examples < 0 else min(args.bpd_examples, len(test))
        report["likelihood"] = bits_per_dim(model, test[:count], min(args.bpd_batch, count))
        report["likelihood"]["seconds"] = round(time.perf_counter() - began, 1)
    num = len(test) if args.samples < 0 else args.samples
    if num > 0:
        began = time.perf_counter()
        options = sampler_options(args)
        fake = generate_uint8(model, num, args.seed, options)
        report["sampler"] = {**options, "seed": args.seed, "num_samples": num}
        report["sampler"]["seconds"] = round(time.perf_counter() - began, 1)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(fake[:64], out / "samples.png")
        if extractor is not None:
            reference, _ = load_arrays(dataset, train_split, **load)
            report["sample_quality"] = sample_quality(
                test, fake, extractor, reference_uint8=reference
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = evaluate(args)
    except (ValueError, FileNotFoundError, CheckpointError, DatasetNotPreparedError) as err:
        print(f"ddpm-eval: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
