"""Per-step cost of the compiled timestep loops, against the cost of one network call.

The loops (ancestral and DDIM sampling, the bits/dim bound) run with a trivial denoiser, so their
per-step time is the loop's own overhead: the coefficient gathers, the noise, the posterior and VLB
math. Each loop is compiled once (`ddpm_tf.sampling.build_loop`, `bpd_loop_graph` in a `tf.function`, as the
`Sampler` and `bits_per_dim` do) and timed after a warm-up call. That is compared with one call of a real network (a U-Net preset) at the same batch, which is
what a step costs in practice.

    python bench/sampling_loops.py                      # batch 16 of 32x32x3, preset ddpm_cifar10
    python bench/sampling_loops.py --preset small_28 --image-size 28 --channels 1
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ddpm_tf  # noqa: E402, F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from common import machine, time_calls  # noqa: E402

from ddpm_tf import GaussianDiffusion, SamplingSpec, get_beta_schedule  # noqa: E402
from ddpm_tf.rng import as_seed  # noqa: E402
from ddpm_tf.sampling import build_loop  # noqa: E402


def trivial(x_t, t):
    """A denoiser that costs almost nothing: the loop's overhead is all that is left."""
    del t
    return 0.1 * x_t


def sampling_loop(diffusion: GaussianDiffusion, shape, spec: SamplingSpec, jit: bool):
    """A compiled sampling loop of `spec` with the trivial denoiser, called with a fixed seed."""
    loop = tf.function(
        lambda seed: build_loop(diffusion, trivial, shape, seed, spec)["sample"],
        jit_compile=jit,
    )
    seed = as_seed(0)
    return lambda: loop(seed)


def bpd_loop(diffusion: GaussianDiffusion, x_start, jit: bool):
    """The compiled bits/dim loop with the trivial denoiser."""
    loop = tf.function(lambda x, seed: diffusion.bpd_loop_graph(trivial, x, seed), jit_compile=jit)
    seed = as_seed(0)
    return lambda: loop(x_start, seed)


def network_call_seconds(preset: str, shape, repeats: int) -> float:
    from ddpm_tf import unet

    net = unet.from_preset(preset)
    x = tf.random.normal(shape)
    t = tf.fill([shape[0]], 500)
    call = tf.function(lambda x, t: net(x, t, training=False))
    return time_calls(lambda: call(x, t), repeats, 1)["median_s"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="T of the schedule")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--preset", default="ddpm_cifar10", help="U-Net preset for the network call; '' to skip"
    )
    args = parser.parse_args(argv)

    shape = (args.batch, args.image_size, args.image_size, args.channels)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", args.steps))
    x_start = tf.clip_by_value(tf.random.normal(shape), -1.0, 1.0)

    print(f"machine: {machine()}")
    print(f"batch {shape}, T={args.steps}, DDIM {args.ddim_steps} steps, median of {args.repeats}")
    rows = []
    for jit in (False, True):
        mode = "XLA" if jit else "graph"
        loops = {
            "ancestral": (args.steps, sampling_loop(diffusion, shape, SamplingSpec(), jit)),
            "ddim": (
                args.ddim_steps,
                sampling_loop(diffusion, shape, SamplingSpec("ddim", args.ddim_steps), jit),
            ),
            "bits/dim": (args.steps, bpd_loop(diffusion, x_start, jit)),
        }
        for name, (steps, fn) in loops.items():
            per_step = time_calls(fn, args.repeats, 1)["median_s"] / steps
            rows.append((name, mode, per_step))
            print(f"{name:18s} {mode:5s} {per_step * 1e3:8.3f} ms/step")
    if args.preset:
        net = network_call_seconds(args.preset, shape, args.repeats)
        print(f"network call ({args.preset}, graph): {net * 1e3:.1f} ms")
        for name, mode, per_step in rows:
            print(
                f"{name:18s} {mode:5s} loop overhead = {100 * per_step / net:6.2f}% of a network call"
            )


if __name__ == "__main__":
    main()
