"""`ddpm-export`: export a trained DiffusionModel as verified SavedModel, TFLite and ONNX samplers.

    ddpm-export RUN_DIR_OR_MODEL --format saved_model tflite onnx --out DIR [options]

Exports the sampler and the denoiser of a trained model in each format (with `--functions`, also
the editing functions `inpaint` and `img2img`), runs every artifact in
its own runtime against TensorFlow and writes DIR/manifest.json. A thin command line over
`ddpm_tf.exporting`: an artifact outside its tolerance is a failure (exit code 1; the artifacts
are kept in DIR.partial).
"""

from __future__ import annotations

import argparse
import dataclasses

from ddpm_tf import cli, rng
from ddpm_tf.errors import InputError
from ddpm_tf.exporting import (
    EXPORT_SPEC,
    FORMATS,
    ExportOptions,
    ExportVerificationError,
    export_model,
    load_model,
)
from ddpm_tf.exporting.options import FUNCTIONS, ONNX_OPSETS, QUANTIZATIONS
from ddpm_tf.exporting.pipeline import check_output_dir
from ddpm_tf.guidance import load_noisy_classifier
from ddpm_tf.sampling.spec import SamplingSpec


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser(
        "ddpm-export",
        "Export a trained ddpm-tf model as SavedModel (TF Serving), TFLite and ONNX samplers that "
        "are verified against TensorFlow.",
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
    defaults = ExportOptions()
    parser.add_argument(
        "--functions",
        nargs="+",
        choices=FUNCTIONS,
        default=list(defaults.functions),
        help="functions every format carries (default: sample denoise); inpaint and img2img edit "
        "uint8 images with the sampling method; guided is the sampler steered by "
        "--noisy-classifier",
    )
    parser.add_argument(
        "--strength",
        type=cli.finite_float,
        help=f"img2img's strength (default {defaults.strength})",
    )
    parser.add_argument(
        "--resample", type=int, help="inpaint's RePaint rounds (default 1: plain replacement)"
    )
    parser.add_argument("--jump", type=int, help=f"RePaint's jump length (default {defaults.jump})")
    cli.add_num_samples(
        parser, 4, "batch of the fixed-shape TFLite/ONNX samplers and of the verification"
    )
    cli.add_guidance_scale(parser, 2.0, "guidance scale used to verify a class-conditional sampler")
    cli.add_classifier_guidance(parser)
    parser.add_argument(
        "--tflite-quantization",
        choices=QUANTIZATIONS,
        default="none",
        help="dynamic: int8 weights in both TFLite models; float16: the denoiser only",
    )
    parser.add_argument("--onnx-opset", type=int, choices=ONNX_OPSETS, default=17)
    cli.add_seed(parser, 2024, "verification seed")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    cli.add_sampling_arguments(parser, EXPORT_SPEC)
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


def _editing_settings(args: argparse.Namespace) -> dict:
    """--strength, --resample and --jump as ExportOptions fields; each needs its function."""
    owners = {"strength": "img2img", "resample": "inpaint", "jump": "inpaint"}
    settings = {name: getattr(args, name) for name in owners if getattr(args, name) is not None}
    for name in settings:
        if owners[name] not in args.functions:
            raise InputError(f"--{name} sets {owners[name]}: add it to --functions.")
    return settings


def model_spec(args: argparse.Namespace, model) -> SamplingSpec:
    """The exported sampling of a model with its own spec (a distilled student): that spec with
    the portable noise of exports, then the flags given."""
    own = model.default_spec.replace(noise_source=EXPORT_SPEC.noise_source)
    return cli.sampling_spec(args, own)


def export(args: argparse.Namespace) -> None:
    """Checks every input (options, output directory, model) first, then exports and verifies."""
    options = ExportOptions(
        functions=tuple(args.functions),
        **_editing_settings(args),
        formats=tuple(args.formats),
        spec=cli.sampling_spec(args, EXPORT_SPEC),
        num_samples=args.num_samples,
        guidance_scale=args.guidance_scale,
        **({} if args.classifier_scale is None else {"classifier_scale": args.classifier_scale}),
        tflite_quantization=args.tflite_quantization,
        onnx_opset=args.onnx_opset,
        verify_seed=tuple(int(v) for v in rng.as_seed(args.seed).numpy()),
    )
    if args.classifier_scale is not None and args.noisy_classifier is None:
        raise InputError("--classifier-scale goes with --noisy-classifier PATH.")
    check_output_dir(args.out, args.overwrite)
    model = load_model(args.model)
    if model.default_spec is not None:  # a student samples as it was distilled
        options = dataclasses.replace(options, spec=model_spec(args, model))
    cli.check_samples_fit(model, args.num_samples)  # the verification samples them at once
    classifier = (
        None if args.noisy_classifier is None else load_noisy_classifier(args.noisy_classifier)
    )
    try:
        manifest = export_model(
            model, args.out, options, classifier=classifier, overwrite=args.overwrite
        )
    except ExportVerificationError as error:
        raise cli.Failed(f"verification failed: {error}") from error
    print(_summary(manifest))
    print(f"Wrote {args.out} (manifest.json)")


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-export; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), export, argv)


if __name__ == "__main__":
    raise SystemExit(main())
