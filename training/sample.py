"""`ddpm-sample`: N images from a run directory or a `.keras` model, as a PNG grid and an `.npz`.

    ddpm-sample runs/digits --num 64 --out samples/                  # 1000-step ancestral
    ddpm-sample runs/digits --sampler ddim --steps 50 --seed 7 --out samples/
    ddpm-sample runs/cifar10 --steps 250 --out samples/              # respaced ancestral
    ddpm-sample runs/cond --labels 3 --guidance 2.0 --out samples/   # class 3, guided

The `.npz` holds `images` (uint8 [N, H, W, C]), `labels` (if any) and the settings used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ddpm_tf.data import unit_to_uint8  # noqa: E402
from ddpm_tf.images import save_grid  # noqa: E402
from ddpm_tf.runs import CheckpointError, load_model  # noqa: E402
from ddpm_tf.sampling import parse_steps  # noqa: E402


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a sampler (shared by ddpm-sample and ddpm-eval)."""
    parser.add_argument("--sampler", choices=("ancestral", "ddim"), default="ancestral")
    parser.add_argument(
        "--steps",
        default=None,
        help="number of steps (respaced from T), or 'ddimN'; default: all T steps",
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale in [0, 1]")
    parser.add_argument("--raw-weights", action="store_true", help="use raw, not EMA, weights")
    parser.add_argument("--seed", type=int, default=0)


def sampler_options(args: argparse.Namespace) -> dict:
    return dict(
        sampler=args.sampler,
        num_steps=parse_steps(args.steps),
        eta=args.eta,
        use_ema=not args.raw_weights,
    )


def generate_uint8(
    model, num: int, seed: int, options: dict, labels=None, guidance: float = 1.0, batch: int = 256
) -> np.ndarray:
    """`num` samples as uint8 [N, H, W, C], generated in batches of `batch` (seed folded per batch)."""
    chunks = []
    for index, start in enumerate(range(0, num, batch)):
        count = min(batch, num - start)
        part = None if labels is None else labels[start : start + count]
        images = model.generate(
            count, seed=(seed, index), labels=part, guidance_scale=guidance, **options
        )
        chunks.append(unit_to_uint8(images).numpy())
    return np.concatenate(chunks)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ddpm-sample", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory written by ddpm-train, or a .keras file")
    parser.add_argument("--num", type=int, default=64, help="number of images")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--labels",
        default=None,
        help="class-conditional models: one class for all images, or a comma-separated list",
    )
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_sampler_arguments(parser)
    return parser.parse_args(argv)


def _labels(text: str | None, num: int) -> np.ndarray | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as err:
        raise ValueError(f"--labels must be integers separated by commas, got {text!r}.") from err
    if len(values) == 1:
        values = values * num
    if len(values) != num:
        raise ValueError(f"--labels has {len(values)} entries for --num {num}.")
    return np.asarray(values, np.int32)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    grid_path, npz_path = out / "samples.png", out / "samples.npz"
    try:
        if args.num < 1:
            raise ValueError(f"--num must be >= 1, got {args.num}.")
        existing = [str(p) for p in (grid_path, npz_path) if p.exists()]
        if existing and not args.overwrite:
            raise ValueError(f"{existing} exist; pass --overwrite or another --out.")
        labels = _labels(args.labels, args.num)
        model = load_model(args.model)
        options = sampler_options(args)
        images = generate_uint8(model, args.num, args.seed, options, labels, args.guidance)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"ddpm-sample: error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    settings = {**options, "seed": args.seed, "guidance": args.guidance, "model": args.model}
    extra = {} if labels is None else {"labels": labels}
    np.savez_compressed(npz_path, images=images, settings=json.dumps(settings), **extra)
    save_grid(images, grid_path)
    print(f"{len(images)} images {images.shape[1:]}: {grid_path}, {npz_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
