"""ddpm-export RUN_DIR_OR_MODEL --format saved_model tflite onnx --out DIR [options].

Exports the sampler and the denoiser of a trained model in each format, runs every artifact in
its own runtime against TensorFlow and writes DIR/manifest.json. Exits 0 when every artifact is
within tolerance, 1 when one is not (the artifacts are kept in DIR.partial), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from ddpm_tf.diffusion import SAMPLERS
from ddpm_tf.exporting.options import FORMATS, ONNX_OPSETS, QUANTIZATIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm-export",
        description="Export a trained ddpm-tf model as SavedModel (TF Serving), TFLite and ONNX "
        "samplers that are verified against TensorFlow.",
    )
    parser.add_argument(
        "model", metavar="RUN_DIR_OR_MODEL", help="a .keras file or a training run directory"
    )
    parser.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        dest="formats",
        help="formats to write (default: all)",
    )
    parser.add_argument("--out", required=True, help="output directory (must be empty or new)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    parser.add_argument(
        "--steps", default=None, help="sampling steps: a count (respaced) or ddimN; default all T"
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity in [0, 1]")
    parser.add_argument(
        "--raw-weights", action="store_true", help="export the raw weights instead of the EMA ones"
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=4,
        help="batch of the fixed-shape TFLite/ONNX samplers and of the verification",
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=2.0,
        help="guidance scale used to verify a class-conditional sampler",
    )
    parser.add_argument("--no-clip", action="store_true", help="do not clip x_0 predictions")
    parser.add_argument(
        "--tflite-quantization",
        choices=QUANTIZATIONS,
        default="none",
        help="dynamic: int8 weights in both TFLite models; float16: the denoiser only",
    )
    parser.add_argument("--onnx-opset", type=int, choices=ONNX_OPSETS, default=17)
    parser.add_argument(
        "--seed", type=int, nargs=2, default=(2024, 7), metavar=("A", "B"), help="verification seed"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


def _summary(manifest: dict) -> str:
    lines = [f"{'format':<12} {'function':<9} {'error':<44} ok"]
    for artifact in manifest["artifacts"]:
        measures = "; ".join(
            ", ".join(f"{k}={v:.3g}" for k, v in m.items())
            for m in artifact["verification"]["outputs"].values()
        )
        ok = "yes" if artifact["verification"]["passed"] else "NO"
        lines.append(f"{artifact['format']:<12} {artifact['function']:<9} {measures:<44} {ok}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from ddpm_tf.exporting import ExportOptions, ExportVerificationError, export_model, load_model
    from ddpm_tf.exporting.pipeline import check_output_dir

    try:
        options = ExportOptions(
            formats=tuple(args.formats),
            sampler=args.sampler,
            steps=args.steps,
            eta=args.eta,
            use_ema=not args.raw_weights,
            num_samples=args.num_samples,
            guidance_scale=args.guidance_scale,
            clip_denoised=not args.no_clip,
            tflite_quantization=args.tflite_quantization,
            onnx_opset=args.onnx_opset,
            verify_seed=tuple(args.seed),
        )
        check_output_dir(args.out, args.overwrite)
        model = load_model(args.model)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as error:
        parser.error(str(error))  # exits with status 2
    try:
        manifest = export_model(model, args.out, options, overwrite=args.overwrite)
    except ExportVerificationError as error:
        print(f"ddpm-export: verification failed: {error}", file=sys.stderr)
        return 1
    print(_summary(manifest))
    print(f"Wrote {args.out} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
