"""`ddpm-eval`: test-set bits/dim from the full variational bound, and FID/KID of samples.

    ddpm-eval runs/digits --classifier runs/digits_classifier.keras --out runs/digits/eval
    ddpm-eval runs/cifar10 --inception-weights inception_v3_..._notop.h5 --num-samples 10000 \
        --method ddim --steps 100 --out runs/cifar10/eval

Bits/dim is the exact bound `calc_bpd_loop` sums over all T steps (L_T + sum L_t + L_0) with the
EMA weights (--no-ema: the trained ones; --xla compiles its loop too), averaged over test images.
FID and KID compare generated images with the test split on the features of the project's
classifier (`ddpm-classifier`) or of Inception-v3 (weights file supplied by the user); beside each
score stands the real-vs-real floor: training images of the same count scored against the test
split, what a perfect generator would get at this sample size. A class-conditional model is sampled
with every class in turn (as the in-training FID does), guided by --guidance-scale.
Writes `report.json` and `samples.png` to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from ddpm_tf import cli
from ddpm_tf.data import load_arrays
from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.distillation import DistillationModel, kept_students
from ddpm_tf.errors import InputError
from ddpm_tf.evaluation import sample_quality
from ddpm_tf.features import ClassifierFeatures, InceptionFeatures
from ddpm_tf.likelihood import bits_per_dim
from ddpm_tf.pixels import save_grid
from ddpm_tf.quality import plot_quality, quality_of_samplers, write_table
from ddpm_tf.runs import RunDirectory, load_model
from ddpm_tf.sampling import generate_uint8
from ddpm_tf.sampling.spec import SamplingSpec, parse_comparisons

DEFAULT_SPEC = SamplingSpec()  # ancestral over all T steps, EMA weights


def build_parser() -> cli.ProgramParser:
    parser = cli.ProgramParser("ddpm-eval", __doc__.splitlines()[0].split(": ", 1)[1])
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
    cli.add_num_samples(parser, -1, "images to generate (-1: as many as test images, 0: none)")
    cli.add_guidance_scale(
        parser,
        1.0,
        "class-conditional models, sampled with every class in turn: classifier-free guidance "
        "(1: conditional, > 1: guided, 0: the unconditional null class)",
    )
    cli.add_classifier_guidance(parser)
    cli.add_seed(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images per compiled call")
    features = parser.add_mutually_exclusive_group()
    features.add_argument("--classifier", help="a .keras classifier from ddpm-classifier")
    features.add_argument("--inception-weights", help="InceptionV3 no-top weights (.h5)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="METHOD:STEPS[/STEPS...]",
        help="score several samplers instead of one, a row per steps value (each as --steps "
        "takes it): e.g. ancestral:10/20/all ddim:10/20 dpm_solver++:logsnr10/logsnr20; writes "
        "quality.json and quality.png (needs features)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    cli.add_sampling_arguments(parser, DEFAULT_SPEC)
    return parser


def real_images(args: argparse.Namespace) -> tuple[dict, Callable, Callable]:
    """(what the images are, test images loader, training images loader): uint8 [N, H, W, C].

    A run on a folder of images is measured on the pixel caches its training made (the held-out
    5% and the training images); otherwise on the tfds splits of --dataset or of the run.
    """
    run = RunDirectory(args.model)
    data_cfg = (run.saved_config() or {}).get("data", {})
    if not args.dataset and data_cfg.get("images"):
        where = {"dataset": data_cfg["images"], "split": "held-out 5%"}
        return (
            where,
            lambda: PixelCache(run.data_dir / "test").load(),
            lambda: PixelCache(run.data_dir / "train").load(),
        )
    dataset = args.dataset or data_cfg.get("dataset")
    if not dataset:
        raise InputError("--dataset is needed when the model is not a run directory.")
    split = args.split or data_cfg.get("test_split", "test")
    train_split = args.train_split or data_cfg.get("train_split", "train")
    load = dict(
        data_dir=args.data_dir, label_key=None, image_size=data_cfg.get("image_size") or None
    )
    return (
        {"dataset": dataset, "split": split},
        lambda: load_arrays(dataset, split, **load)[0],
        lambda: load_arrays(dataset, train_split, **load)[0],
    )


def evaluate(args: argparse.Namespace) -> dict:
    """Measures the model of `args` and writes report.json (and samples.png); returns the report."""
    spec = cli.sampling_spec(args, DEFAULT_SPEC)
    compared = parse_comparisons(args.compare, spec) if args.compare else []
    if compared and not (args.classifier or args.inception_weights):
        raise InputError("--compare scores samples: give --classifier or --inception-weights.")
    out = Path(args.out)
    if (out / "report.json").exists() and not args.overwrite:
        raise InputError(f"{out / 'report.json'} exists; pass --overwrite or another --out.")
    model = load_model(args.model)  # first: a missing model is named as such
    if model.default_spec is not None:  # a student samples as it was distilled
        spec = cli.sampling_spec(args, DEFAULT_SPEC, model)
        compared = parse_comparisons(args.compare, spec) if args.compare else []
    cli.check_guidance(model, args.guidance_scale)  # these two before the test split is read
    cli.check_samples_fit(model, args.num_samples)
    dataset, test, reference = real_images(args)
    if args.classifier:
        extractor = ClassifierFeatures(args.classifier)
    elif args.inception_weights:
        extractor = InceptionFeatures(args.inception_weights)
    else:
        extractor = None
    test = test()
    num = len(test) if args.num_samples < 0 else args.num_samples
    condition = cli.conditioning(args, model, num)
    report: dict = {"model": str(args.model), "step": model.step, **dataset}
    if condition["labels"] is not None and num > 0:
        report["conditioning"] = {
            "labels": "every class in turn",
            "guidance_scale": args.guidance_scale,
        }
        if "classifier" in condition:
            report["conditioning"].update(
                noisy_classifier=args.noisy_classifier,
                classifier_scale=condition["classifier_scale"],
            )
    began = time.perf_counter()
    if args.bpd_examples != 0:
        count = len(test) if args.bpd_examples < 0 else min(args.bpd_examples, len(test))
        progress = cli.ProgressLine("bits/dim", count, "images")
        report["likelihood"] = bits_per_dim(
            model,
            test[:count],
            args.bpd_batch,
            use_ema=spec.use_ema,
            jit_compile=spec.jit_compile,  # --xla: the bound's loop too (faster on CPU)
            progress=progress,
        )
        report["likelihood"]["seconds"] = round(time.perf_counter() - began, 1)
    if compared:
        out.mkdir(parents=True, exist_ok=True)
        rows = quality_of_samplers(
            _samplers(model, args.model, compared),
            test,
            extractor,
            reference=reference(),
            num_samples=num,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=lambda s: cli.ProgressLine(f"{s.method} {s.steps.text}", num, "images"),
            on_samples=lambda name, s, images: save_grid(
                images[:64], out / f"samples_{name}_{s.steps.text}.png"
            ),
            **condition,
        )
        write_table(rows, out / "quality.json")
        title = f"{dataset['dataset']}: {num} samples, {model.step} steps"
        plot_quality(rows, out / "quality.png", title)
        report["quality_against_steps"] = rows
    elif num > 0:
        began = time.perf_counter()
        fake = generate_uint8(
            model,
            num,
            args.seed,
            spec,
            batch_size=args.batch_size,
            progress=cli.ProgressLine("sampling", num, "images"),
            **condition,
        )
        report["sampling"] = {**spec.to_dict(), "seed": args.seed, "num_samples": num}
        report["sampling"]["seconds"] = round(time.perf_counter() - began, 1)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(fake[:64], out / "samples.png")
        if extractor is not None:
            report["sample_quality"] = sample_quality(
                test, fake, extractor, reference_uint8=reference()
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def _samplers(model, path: str, compared: list[SamplingSpec]) -> list[tuple]:
    """The --compare rows: (name, model, spec) of each compared spec; for a distillation run
    the teacher's (those are its methods), then each student it kept, in its own steps."""
    if not isinstance(model, DistillationModel):
        return [(spec.method, model, spec) for spec in compared]
    teacher = load_model(model.teacher)
    students = [load_model(file) for file in kept_students(path)]
    if model.default_spec not in {student.default_spec for student in students}:
        students.append(model)  # a run still in its rounds: its student now
    return [(spec.method, teacher, spec) for spec in compared] + [
        ("distilled", student, student.default_spec) for student in students
    ]


def main(argv: list[str] | None = None) -> int:
    """Runs ddpm-eval; returns the exit code (0 done, 1 failed, 2 bad input)."""
    return cli.main(build_parser(), evaluate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
