"""What every program of the package shares: parsing, flags, errors and exit codes.

Each program (`ddpm-train`, `ddpm-sample`, `ddpm-eval`, `ddpm-classifier`, `ddpm-prepare`,
`ddpm-export`) builds a `ProgramParser`, takes its shared flags from here (the sampling spec, the
seed, the number of samples, the guidance scale) and runs its body through `run`, so that all of
them behave alike:

- exit codes: 0 done, 1 failed, 2 bad input, 3 non-finite loss (stated in every `--help`);
- every expected error is one line on stderr, "PROGRAM: error: what was wrong and how to fix it";
  a file that cannot be written (`WriteError`: a full disk, a read-only directory) is a failure,
  "PROGRAM: failed: could not write WHAT to PATH: [Errno N] reason"; an unexpected error is one
  line too; `--verbose` adds the traceback of each;
- `--verbose` also shows TensorFlow's start-up lines, which a plain run holds back (see
  `ddpm_tf._startup`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from ddpm_tf.errors import InputError, WriteError
from ddpm_tf.sampling.spec import METHODS, NOISE_SOURCES, SamplingSpec

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_CODES = "exit codes: 0 done, 1 failed, 2 bad input, 3 non-finite loss"

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DONE",
    "EXIT_FAILED",
    "EXIT_NON_FINITE",
    "Failed",
    "ProgressLine",
    "NonFiniteLoss",
    "ProgramParser",
    "add_guidance_scale",
    "add_num_samples",
    "add_sampling_arguments",
    "add_seed",
    "available_memory",
    "check_guidance",
    "check_samples_fit",
    "finite_float",
    "format_duration",
    "main",
    "run",
    "sampling_labels",
    "sampling_spec",
]


class Failed(RuntimeError):
    """The program ran but did not achieve its goal (exit code 1), e.g. an export that fails its
    verification."""


class NonFiniteLoss(RuntimeError):
    """Training stopped at a NaN or infinite loss (exit code 3)."""


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the user's input was wrong (exit code 2): the package's own checks
    (`InputError`), a path that is missing or of the wrong kind, a module the user's option needs,
    and a corrupt or mismatched checkpoint (the user chose the file). A bare ValueError or
    TypeError comes from inside a library: a failure (exit code 1), not bad input."""
    from ddpm_tf.runs import CheckpointError  # imported here: runs imports TensorFlow

    return (
        InputError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        ModuleNotFoundError,
        CheckpointError,
    )


def one_line(error: BaseException) -> str:
    """An exception's message as one line."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


class ProgramParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit 2) and whose help states the exit codes.

    Every program gets `--verbose`: TensorFlow's start-up lines and tracebacks of unexpected errors.
    """

    def __init__(self, prog: str, description: str, **kwargs: Any):
        super().__init__(
            prog=prog,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        self.add_argument(
            "--verbose",
            action="store_true",
            help="show TensorFlow's start-up lines and the traceback of an error",
        )

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


# The flag of each SamplingSpec setting; a test checks that every field of the spec has one.
SAMPLING_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "method": ("--method", {"choices": METHODS, "help": "sampling method"}),
    "steps": (
        "--steps",
        {
            "help": "sampling steps: all, N (the method's default spacing), uniformN, strideN, "
            "logsnrN, trailingN, or section counts like 10,15,20"
        },
    ),
    "eta": ("--eta", {"type": float, "help": "DDIM stochasticity in [0, 1]"}),
    "solver_order": (
        "--solver-order",
        {"type": int, "help": "multistep order: DPM-Solver++ 1-2, UniPC 1-3"},
    ),
    "clip_denoised": (
        "--clip",
        {"action": argparse.BooleanOptionalAction, "help": "clip x_0 predictions to [-1, 1]"},
    ),
    "dynamic_threshold": (
        "--dynamic-threshold",
        {"type": float, "help": "quantile in (0, 1) for dynamic thresholding of x_0; 0: off"},
    ),
    "use_ema": (
        "--ema",
        {"action": argparse.BooleanOptionalAction, "help": "EMA weights (--no-ema: raw weights)"},
    ),
    "noise_source": ("--noise-source", {"choices": NOISE_SOURCES, "help": "noise generator"}),
    "jit_compile": (
        "--xla",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "compile the sampling loop (and ddpm-eval's bound) with XLA",
        },
    ),
}


def add_sampling_arguments(
    parser: argparse.ArgumentParser, default: SamplingSpec
) -> argparse._ArgumentGroup:
    """The flags of a `SamplingSpec`, each defaulting to `default`'s value (shown in --help)."""
    group = parser.add_argument_group("sampling", "how images are sampled (a SamplingSpec)")
    for name in SamplingSpec.fields():
        flag, options = SAMPLING_FLAGS[name]
        value = getattr(default, name)
        shown = value.text if name == "steps" else value
        options = {**options, "help": f"{options['help']} (default: {shown})"}
        group.add_argument(flag, dest=f"spec_{name}", default=argparse.SUPPRESS, **options)
    return group


def sampling_spec(
    args: argparse.Namespace, default: SamplingSpec, model: Any = None
) -> SamplingSpec:
    """The `SamplingSpec` of the parsed flags: `default` (or the `model`'s own spec, a distilled
    student's, when it has one) with the flags that were given."""
    default = getattr(model, "default_spec", None) or default
    given = {
        name: getattr(args, f"spec_{name}")
        for name in SamplingSpec.fields()
        if hasattr(args, f"spec_{name}")
    }
    return default.replace(**given)


class _SeedAction(argparse.Action):
    """Stores `--seed N` as an int and `--seed N M` as a pair."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            parser.error(f"--seed takes one int or two, got {len(values)}")
        setattr(namespace, self.dest, values[0] if len(values) == 1 else tuple(values))


def add_seed(parser: argparse.ArgumentParser, default: int = 0, help: str = "random seed") -> None:
    """`--seed N` or `--seed N M`: one int or a pair (as `ddpm_tf.rng.as_seed` takes them)."""
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        action=_SeedAction,
        default=default,
        metavar="N",
        help=f"{help}: one int or two (default: {default})",
    )


def add_num_samples(parser: argparse.ArgumentParser, default: int, help: str) -> None:
    """`--num-samples N`: how many images a program generates."""
    parser.add_argument(
        "--num-samples", type=int, default=default, help=f"{help} (default: {default})"
    )


def finite_float(text: str) -> float:
    """An argparse type: a float that is finite (NaN and infinities are refused while parsing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_guidance_scale(parser: argparse.ArgumentParser, default: float, help: str) -> None:
    """`--guidance-scale S`: classifier-free guidance of class-conditional models."""
    parser.add_argument(
        "--guidance-scale", type=finite_float, default=default, help=f"{help} (default: {default})"
    )


def sampling_labels(model: Any, num_samples: int, guidance_scale: float, labels: Any = None) -> Any:
    """The labels a program samples `model` with: `labels` if given, else every class in turn
    for a class-conditional model (`sampling.every_class`), None for an unconditional one; which
    takes no `--guidance-scale`. Given labels are checked against the model's classes here, all
    at once, before the first batch is sampled."""
    from ddpm_tf.sampling import check_labels, every_class  # TensorFlow: not at import

    check_guidance(model, guidance_scale)
    if labels is None:
        return every_class(num_samples, model.num_classes)
    check_labels(labels, model.num_classes, allow_null=True)
    return labels


def add_classifier_guidance(parser: argparse.ArgumentParser) -> None:
    """`--noisy-classifier PATH` and `--classifier-scale S`: classifier guidance."""
    group = parser.add_argument_group(
        "classifier guidance", "steer sampling toward --labels with a classifier of noisy images"
    )
    group.add_argument(
        "--noisy-classifier",
        metavar="PATH",
        help="the run directory (or its classifier.keras) of ddpm-classifier --noisy RUN_DIR; "
        "without --labels every class in turn",
    )
    group.add_argument(
        "--classifier-scale",
        type=finite_float,
        help="how strongly the classifier steers, >= 0 (default: 1; 0: not at all)",
    )


def conditioning(
    args: argparse.Namespace, model: Any, num_samples: int, labels: Any = None
) -> dict:
    """The keyword arguments of `generate_uint8` that condition `model` as the flags say:
    labels, guidance_scale, and with --noisy-classifier the classifier and its scale. Labels
    default to every class in turn (of the model, or of the classifier); all are checked here,
    before anything is sampled."""
    path = getattr(args, "noisy_classifier", None)
    scale = getattr(args, "classifier_scale", None)
    if path is None:
        if scale is not None:
            raise InputError("--classifier-scale goes with --noisy-classifier PATH.")
        labels = sampling_labels(model, num_samples, args.guidance_scale, labels)
        return {"labels": labels, "guidance_scale": args.guidance_scale}
    from ddpm_tf.guidance import load_noisy_classifier  # TensorFlow: not at import
    from ddpm_tf.sampling import check_labels, every_class
    from ddpm_tf.sampling.sampler import classifier_classes

    check_guidance(model, args.guidance_scale)
    classifier = load_noisy_classifier(path)
    classes = classifier_classes(classifier, model.image_shape)
    if labels is None:
        labels = every_class(num_samples, classes)
    check_labels(labels, classes, allow_null=False)
    if model.num_classes is not None:
        check_labels(labels, model.num_classes, allow_null=False)
    scale = 1.0 if scale is None else scale
    if scale < 0:
        raise InputError(f"--classifier-scale must be >= 0, got {scale:g}.")
    return {
        "labels": labels,
        "guidance_scale": args.guidance_scale,
        "classifier": classifier,
        "classifier_scale": scale,
    }


def check_guidance(model: Any, guidance_scale: float) -> None:
    """Raise a ValueError if `--guidance-scale` is set for an unconditional model."""
    if model.num_classes is None and guidance_scale != 1.0:
        raise InputError(
            "--guidance-scale applies to class-conditional models; this model is unconditional. "
            "Leave --guidance-scale out."
        )


def available_memory() -> int | None:
    """Bytes of memory available for new data: MemAvailable of /proc/meminfo (Linux), else the
    free physical pages (`os.sysconf`); None where neither can be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(count: float) -> str:
    """A byte count in binary units, e.g. "58.2 TiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def check_samples_fit(model: Any, num_samples: int) -> None:
    """Raise an InputError if the `--num-samples` images of `model` alone (uint8 [N, H, W, C],
    which a program holds in memory to save or score them) exceed the memory available now,
    before any array of that size is made and before anything is sampled."""
    height, width, channels = (int(s) for s in model.image_shape)
    needed = max(num_samples, 0) * height * width * channels
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(
            f"--num-samples {num_samples} needs {_bytes(needed)} of memory for the images alone "
            f"({height}x{width}x{channels} bytes each), but {_bytes(available)} is available; "
            "lower --num-samples (several runs with different --seed give more images)."
        )


def main(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], Any],
    argv: list[str] | None = None,
) -> int:
    """A program's `main`: parses `argv` with `parser` and runs `body` (see `run`)."""
    return run(parser.prog, body, parser.parse_args(argv))


def format_duration(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss ("?" when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """A progress report for long loops: "label: done/total unit | rate unit/s | ETA m:ss".

    Call it with the number of items done; it prints at most every `interval` seconds (and at the
    end) to `stream` (stderr by default, so that a program's stdout stays its result).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        *,
        interval: float = 10.0,
        stream: TextIO | None = None,
    ):
        self.label, self.total, self.unit, self.interval = label, total, unit, interval
        self.stream = stream
        self.started = time.perf_counter()
        # The first line after `interval`: a short loop prints only its last line, and an error
        # within the first seconds (a corrupt file) stays the only line on stderr.
        self.last_printed = self.started

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last_printed < self.interval:
            return
        self.last_printed = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else math.nan
        eta = (self.total - done) / rate if rate > 0 else math.nan
        print(
            f"{self.label}: {done}/{self.total} {self.unit} | {rate:.3g} {self.unit}/s | "
            f"ETA {format_duration(eta)}",
            file=self.stream or sys.stderr,
            flush=True,
        )


def run(prog: str, body: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Runs a program's body and turns its outcome into an exit code and at most one error line.

    The body's return value is the exit code if it is an int, else the program is done (0).
    """
    try:
        status = body(args)
        return status if isinstance(status, int) else EXIT_DONE
    except NonFiniteLoss as err:
        print(f"{prog}: stopped: {one_line(err)}", file=sys.stderr)
        return EXIT_NON_FINITE
    except (Failed, WriteError) as err:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"{prog}: failed: {one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001  (sorted into bad input and failures below)
        if getattr(args, "verbose", False):  # a ValueError may come from deep in a library too
            traceback.print_exc()
        if isinstance(err, _bad_input_errors()):
            print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        hint = "" if getattr(args, "verbose", False) else " (rerun with --verbose for details)"
        print(f"{prog}: failed: {type(err).__name__}: {one_line(err)}{hint}", file=sys.stderr)
        return EXIT_FAILED
