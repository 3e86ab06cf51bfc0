"""`ddpm-sample`: N images from a run directory or a `.keras` model, as a PNG grid and an `.npz`.

    ddpm-sample runs/digits --num-samples 64 --out samples/              # 1000-step ancestral
    ddpm-sample runs/digits --method ddim --steps 50 --seed 7 --out samples/
    ddpm-sample runs/cifar10 --steps 250 --out samples/                  # respaced ancestral
    ddpm-sample runs/cond --labels 3 --guidance-scale 2.0 --out samples/ # class 3, guided

A class-conditional model without --labels draws every class in turn (0, 1, ..., K-1, 0, ...), as
ddpm-eval and the training grids do; --labels K (K classes: K is the null class) samples it
unconditionally.

The `.npz` holds `images` (uint8 [N, H, W, C]), `labels` (if any) and the settings used. With
--overwrite, the files at --out are replaced only once both new ones are written: a failed write
(a full disk) leaves them as they were and exits with code 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ddpm_tf import cli
from ddpm_tf.errors import InputError
from ddpm_tf.files import atomic_path
from ddpm_tf.pixels import save_grid
from ddpm_tf.runs import load_model
from ddpm_tf.sampling import generate_uint8
from ddpm_tf.sampling.spec import SamplingSpec

DEFAULT_SPEC = SamplingSpec()  # ancestral over all T steps, EMA weights


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser("ddpm-sample", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("model", help="a run directory written by ddpm-train, or a .keras file")
    parser.add_argument("--out", required=True, help="output directory")
    cli.add_num_samples(parser, 64, "number of images")
    parser.add_argument(
        "--labels",
        default=None,
        help="class-conditional models: one class for all images, or a comma-separated list "
        "(default: every class in turn; the null class num_classes: unconditional)",
    )
    cli.add_guidance_scale(parser, 1.0, "classifier-free guidance of class-conditional models")
    cli.add_seed(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images per compiled call")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    cli.add_sampling_arguments(parser, DEFAULT_SPEC)
    return parser


def _labels(text: str | None, num: int) -> np.ndarray | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as err:
        raise InputError(f"--labels must be integers separated by commas, got {text!r}.") from err
    if len(values) == 1:
        values = values * num
    if len(values) != num:
        raise InputError(f"--labels has {len(values)} entries for --num-samples {num}.")
    return np.asarray(values, np.int32)


def sample(args: argparse.Namespace) -> None:
    """Samples and writes the grid and the .npz; checks everything before sampling."""
    spec = cli.sampling_spec(args, DEFAULT_SPEC)
    out = Path(args.out)
    grid_path, npz_path = out / "samples.png", out / "samples.npz"
    existing = [str(p) for p in (grid_path, npz_path) if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing} exist; pass --overwrite or another --out.")
    model = load_model(args.model)
    cli.check_samples_fit(model, args.num_samples)  # before any array of that length
    labels = _labels(args.labels, args.num_samples)
    labels = cli.sampling_labels(model, args.num_samples, args.guidance_scale, labels)
    images = generate_uint8(
        model,
        args.num_samples,
        args.seed,
        spec,
        labels=labels,
        guidance_scale=args.guidance_scale,
        batch_size=args.batch_size,
        progress=cli.ProgressLine("sampling", args.num_samples, "images"),
    )
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        **spec.to_dict(),
        "seed": args.seed,
        "guidance_scale": args.guidance_scale,
        "model": args.model,
    }
    extra = {} if labels is None else {"labels": labels}
    with atomic_path(npz_path, "samples") as scratch:  # both files replaced, or neither
        with open(scratch, "wb") as f:
            np.savez_compressed(f, images=images, settings=json.dumps(settings), **extra)
        save_grid(images, grid_path)
    print(f"{len(images)} images {images.shape[1:]}: {grid_path}, {npz_path}")


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-sample; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), sample, argv)


if __name__ == "__main__":
    raise SystemExit(main())
