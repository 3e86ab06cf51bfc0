"""Sampling latency and throughput of the exported samplers, per format and runtime.

Exports a U-Net preset's sampler (portable noise) with `export_model` (so every artifact is
verified first) and times one call of the complete sampler, the whole loop over timesteps, in:
TensorFlow graph mode, TensorFlow with XLA, the SavedModel loaded back, LiteRT (TFLite) and
onnxruntime. Untrained weights (random output head): the cost does not depend on their values.

    python bench/export_latency.py                         # tiny_8, DDIM 50 steps, batch 4
    python bench/export_latency.py --steps 1000 --method ancestral --repeats 1
    python bench/export_latency.py --preset small_28 --num-samples 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ddpm_tf  # noqa: E402, F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, time_calls  # noqa: E402

from ddpm_tf import METHODS, DiffusionModel, GaussianDiffusion, get_beta_schedule, unet  # noqa: E402
from ddpm_tf.exporting import EXPORT_SPEC, ExportOptions, export_model, open_function  # noqa: E402


def time_formats(
    model: DiffusionModel, options: ExportOptions, out: Path, repeats: int, threads: int
) -> list[tuple[str, float]]:
    """(runtime name, median seconds per sampler call) for every runtime."""
    n, seed = options.num_samples, np.array(options.verify_seed, np.int32)
    rows = []
    count = tf.constant(n, tf.int32)
    for jit, name in ((False, "TF graph"), (True, "TF XLA")):
        sampler = model.sampler(options.spec, jit_compile=jit)
        rows.append(
            (name, time_calls(lambda s=sampler: s.sample(count, seed), repeats, 1)["median_s"])
        )
    runtimes = [
        ("SavedModel", "saved_model", "saved_model", "serving_default"),
        ("TFLite (LiteRT)", "tflite", "tflite/sampler.tflite", "sample"),
        ("ONNX (onnxruntime)", "onnx", "onnx/sampler.onnx", "sample"),
    ]
    for name, fmt, path, key in runtimes:
        if fmt not in options.formats:
            continue
        runner = open_function(fmt, out / path, key, num_threads=threads)
        feeds = {"seed": seed, "num_samples": np.array(n, np.int32)}
        feeds = {k: v for k, v in feeds.items() if k in runner.inputs}
        rows.append((name, time_calls(lambda r=runner, f=feeds: r(f), repeats, 1)["median_s"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny_8")
    parser.add_argument("--timesteps", type=int, default=1000, help="T of the linear schedule")
    parser.add_argument("--steps", default="ddim50", help="sampling steps: a count or ddimN")
    parser.add_argument("--method", default="ddim", choices=METHODS)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--format", nargs="+", default=["saved_model", "tflite", "onnx"], dest="formats"
    )
    args = parser.parse_args(argv)

    model = DiffusionModel(
        unet.from_preset(args.preset, dropout=0.0),
        GaussianDiffusion(get_beta_schedule("linear", args.timesteps)),
    )
    # The output head starts at zero; random values make the verification compare real outputs.
    head = np.random.default_rng(0).normal(0.0, 0.05, model.ema_network.conv_out.kernel.shape)
    model.ema_network.conv_out.kernel.assign(head.astype(np.float32))
    options = ExportOptions(
        formats=tuple(args.formats),
        spec=EXPORT_SPEC.replace(method=args.method, steps=args.steps),
        num_samples=args.num_samples,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        manifest = export_model(model, out, options)
        rows = time_formats(model, options, out, args.repeats, args.threads)
    steps = manifest["sampling"]["num_steps"]
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset} {model.image_shape}, {args.method} {steps} steps of T="
        f"{args.timesteps}, batch {args.num_samples}, {args.threads} threads, median of "
        f"{args.repeats} after 1 warm-up; all artifacts verified against TF"
    )
    for artifact in manifest["artifacts"]:
        errors = artifact["verification"]["outputs"]
        print(f"verified {artifact['format']:<11} {artifact['function']:<8} {errors}")
    print(f"{'runtime':<20} {'s / batch':>10} {'ms / step':>10} {'images / s':>11}")
    for name, seconds in rows:
        print(
            f"{name:<20} {seconds:>10.3f} {1e3 * seconds / steps:>10.2f} "
            f"{args.num_samples / seconds:>11.2f}"
        )


if __name__ == "__main__":
    main()
