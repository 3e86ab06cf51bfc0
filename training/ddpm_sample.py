"""`ddpm-sample`: N images from a run directory or a `.keras` model, as a PNG grid and an `.npz`.

    ddpm-sample runs/digits --num-samples 64 --out samples/              # 1000-step ancestral
    ddpm-sample runs/digits --method ddim --steps 50 --seed 7 --out samples/
    ddpm-sample runs/cifar10 --steps 250 --out samples/                  # respaced ancestral
    ddpm-sample runs/cond --labels 3 --guidance-scale 2.0 --out samples/ # class 3, guided
    ddpm-sample runs/uncond --noisy-classifier runs/uncond/noisy_classifier --labels 3 \
        --classifier-scale 2 --method dpm_solver++ --steps 20 --out samples/  # classifier guidance

Editing (images: PNG/JPEG files, a folder of them, or an .npz with `images`, resized to the model's
shape as training on a folder does):

    ddpm-sample runs/digits --init-images photos/ --strength 0.5 --out edited/   # SDEdit
    ddpm-sample runs/digits --init-images photos/ --mask hole.png --resample 10 --out filled/
    ddpm-sample runs/digits --init-images photos/ --invert --steps 100 --out latents/
    ddpm-sample runs/digits --interpolate a.png b.png --frames 8 --out morph/

A mask is a grayscale image (white: keep) or an .npz with `mask` (1: keep). Editing a
class-conditional model without --labels uses its null class. The grids show the input (and the
mask) beside each result.

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
import tensorflow as tf

from ddpm_tf import cli, editing
from ddpm_tf.checks import check_int
from ddpm_tf.editing.inputs import read_images, read_mask
from ddpm_tf.errors import InputError
from ddpm_tf.files import atomic_path
from ddpm_tf.pixels import save_grid, unit_to_uint8
from ddpm_tf.runs import load_model
from ddpm_tf.sampling import generate_uint8
from ddpm_tf.sampling.spec import SamplingSpec
from ddpm_tf.spacing import AllSteps

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
    cli.add_classifier_guidance(parser)
    cli.add_seed(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images per compiled call")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    cli.add_sampling_arguments(parser, DEFAULT_SPEC)
    edit = parser.add_argument_group("editing")
    edit.add_argument("--init-images", help="images to edit: a file, a folder or an .npz")
    edit.add_argument("--strength", type=cli.finite_float, help="SDEdit strength in [0, 1]")
    edit.add_argument("--mask", help="inpainting mask of --init-images (white/1: keep)")
    edit.add_argument("--resample", type=int, default=1, help="RePaint rounds (1: replacement)")
    edit.add_argument("--jump", type=int, default=10, help="RePaint jump length in steps")
    edit.add_argument("--invert", action="store_true", help="DDIM latents of --init-images")
    edit.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="two images to morph")
    edit.add_argument("--frames", type=int, default=8, help="--interpolate frames (default 8)")
    return parser


EDIT_OUTPUTS = {
    "img2img": "edited",
    "inpaint": "inpainted",
    "invert": "inversion",
    "interpolate": "interpolation",
}


def _edit_mode(args: argparse.Namespace) -> str | None:
    """Which editing mode the flags ask for (None: sampling), or an InputError if they mix."""
    chosen = [f for f in ("strength", "mask", "invert") if getattr(args, f) not in (None, False)]
    if args.interpolate is not None:
        if args.init_images is not None or chosen:
            raise InputError(
                "--interpolate A B takes no --init-images, --strength, --mask or --invert."
            )
        return "interpolate"
    if args.init_images is None:
        if chosen:
            raise InputError(f"--{chosen[0]} edits --init-images PATH: pass the images.")
        return None
    if len(chosen) != 1:
        raise InputError(
            "--init-images needs one of --strength S (image-to-image), --mask PATH (inpainting) "
            "or --invert (latents)."
        )
    mode = {"strength": "img2img", "mask": "inpaint", "invert": "invert"}[chosen[0]]
    if mode != "inpaint" and (args.resample, args.jump) != (1, 10):
        raise InputError("--resample and --jump are RePaint's: they go with --mask.")
    return mode


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


def _write(npz_path: Path, grid_path: Path, grid: np.ndarray, ncols, **arrays) -> None:
    """The .npz of `arrays` and the PNG grid: both replaced, or neither (a failed write keeps
    the files that were there)."""
    with atomic_path(npz_path, "samples") as scratch:
        with open(scratch, "wb") as f:
            np.savez_compressed(f, **arrays)
        save_grid(grid, grid_path, ncols=ncols)


def _ode_steps(spec: SamplingSpec):
    """Inversion's and interpolation's steps: --steps, or 50 when it is left at all T."""
    return 50 if isinstance(spec.steps, AllSteps) else spec.steps


def _side_by_side(*columns: np.ndarray) -> np.ndarray:
    """uint8 [N * K, H, W, C]: row n holds the n-th image of each of the K columns."""
    return np.stack(columns, 1).reshape(-1, *columns[0].shape[1:])


def _uint8(images) -> np.ndarray:
    return np.asarray(unit_to_uint8(images))


def edit(args: argparse.Namespace, mode: str, spec: SamplingSpec, out: Path) -> None:
    """Runs an editing mode and writes its grid and .npz; reads and checks every input first."""
    grid_path, npz_path = out / f"{EDIT_OUTPUTS[mode]}.png", out / f"{EDIT_OUTPUTS[mode]}.npz"
    existing = [str(p) for p in (grid_path, npz_path) if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing} exist; pass --overwrite or another --out.")
    model = load_model(args.model)
    shape = model.image_shape
    if mode == "interpolate":
        a, b = (read_images(path, shape) for path in args.interpolate)
        if len(a) != len(b):
            raise InputError(f"--interpolate: A has {len(a)} images and B {len(b)}.")
        frames = model.interpolate(a, b, check_int(args.frames, "--frames", 2), _ode_steps(spec))
        images = _uint8(tf.transpose(frames, [1, 0, 2, 3, 4])).reshape(-1, *shape)
        out.mkdir(parents=True, exist_ok=True)
        _write(npz_path, grid_path, images, args.frames, images=images, frames=args.frames)
        print(f"{len(a)} interpolations of {args.frames} frames: {grid_path}, {npz_path}")
        return
    inputs = read_images(args.init_images, shape)
    labels = _labels(args.labels, len(inputs))
    if labels is not None:
        labels = cli.sampling_labels(model, len(inputs), args.guidance_scale, labels)
    guided = {"labels": labels, "guidance_scale": args.guidance_scale}
    arrays: dict[str, np.ndarray] = {"inputs": _uint8(inputs)}
    if mode == "img2img":
        result = model.img2img(inputs, args.strength, args.seed, spec=spec, **guided)
        columns = (arrays["inputs"], _uint8(result))
    elif mode == "inpaint":
        mask = editing.check_mask(read_mask(args.mask, shape), tf.constant(inputs))
        result = model.inpaint(
            inputs, mask, args.seed, spec=spec, resample=args.resample, jump=args.jump, **guided
        )
        shown = np.broadcast_to(_uint8(mask * 2.0 - 1.0), arrays["inputs"].shape)
        columns = (arrays["inputs"], shown, _uint8(result))
    else:
        steps = _ode_steps(spec)
        latents = model.invert(inputs, steps, **guided)
        result = model.decode(latents, steps, **guided)
        arrays["latents"] = latents.numpy().astype(np.float32)
        columns = (arrays["inputs"], _uint8(result))
    arrays["images"] = columns[-1]
    settings = {**spec.to_dict(), "mode": mode, "seed": args.seed, "model": args.model}
    out.mkdir(parents=True, exist_ok=True)
    grid = _side_by_side(*columns)
    _write(npz_path, grid_path, grid, len(columns), settings=json.dumps(settings), **arrays)
    print(f"{len(inputs)} images, {mode}: {grid_path}, {npz_path}")


def sample(args: argparse.Namespace) -> None:
    """Samples (or edits) and writes the grid and the .npz; checks everything before sampling."""
    spec = cli.sampling_spec(args, DEFAULT_SPEC)
    out = Path(args.out)
    mode = _edit_mode(args)
    if mode is not None:
        if args.noisy_classifier is not None or args.classifier_scale is not None:
            raise InputError("classifier guidance is for sampling; the editing modes take none.")
        edit(args, mode, spec, out)
        return
    grid_path, npz_path = out / "samples.png", out / "samples.npz"
    existing = [str(p) for p in (grid_path, npz_path) if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing} exist; pass --overwrite or another --out.")
    model = load_model(args.model)
    spec = cli.sampling_spec(args, DEFAULT_SPEC, model)  # a student samples as it was distilled
    cli.check_samples_fit(model, args.num_samples)  # before any array of that length
    labels = _labels(args.labels, args.num_samples)
    condition = cli.conditioning(args, model, args.num_samples, labels)
    images = generate_uint8(
        model,
        args.num_samples,
        args.seed,
        spec,
        batch_size=args.batch_size,
        progress=cli.ProgressLine("sampling", args.num_samples, "images"),
        **condition,
    )
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        **spec.to_dict(),
        "seed": args.seed,
        "guidance_scale": args.guidance_scale,
        "model": args.model,
    }
    if "classifier" in condition:
        settings.update(
            noisy_classifier=args.noisy_classifier, classifier_scale=condition["classifier_scale"]
        )
    labels = condition["labels"]
    extra = {} if labels is None else {"labels": labels}
    _write(npz_path, grid_path, images, None, images=images, settings=json.dumps(settings), **extra)
    print(f"{len(images)} images {images.shape[1:]}: {grid_path}, {npz_path}")


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-sample; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), sample, argv)


if __name__ == "__main__":
    raise SystemExit(main())
