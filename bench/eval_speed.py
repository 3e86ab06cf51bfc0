"""Evaluation and sampling against the network's own speed: how much the loops around it cost.

Bits/dim (`likelihood.bits_per_dim`) and sampling (`sampling.generate_uint8`) call the network T
times per batch; their time is compared, in one run, with the same number of network calls alone
(one compiled `tf.while_loop` of T forward passes at the same batch, the faster of graph and XLA).
Every time includes compilation, as a program run does, and the network-only loop runs the same
batch sizes as the loop it is compared with. Rounds alternate the measurements so that a machine
whose load changes affects both sides alike (each round also swaps which of the two runs first);
the medians of the per-round ratios are reported. A
ratio of 1.0 means the loop adds nothing to the network's cost.

    python bench/eval_speed.py                      # tiny_8 digits: 300 images, batch 250, T=1000
    python bench/eval_speed.py --images 1000 --batch 256 --modes graph --rounds 1
    python bench/eval_speed.py --preset small_28 --image-size 28 --images 200 --batch 200
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ddpm_tf  # noqa: E402, F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, time_calls  # noqa: E402

from ddpm_tf import (  # noqa: E402
    DiffusionModel,
    GaussianDiffusion,
    SamplingSpec,
    generate_uint8,
    get_beta_schedule,
    unet,
)
from ddpm_tf.likelihood import bits_per_dim, even_batch  # noqa: E402


def network_only(model: DiffusionModel, batches: list[int], steps: int, jit: bool) -> float:
    """Seconds for `steps` forward passes of the EMA network at each batch size of `batches`, each
    batch one compiled loop (the same calls, batch by batch, as the loop it is compared with)."""
    network = model.ema_network

    @tf.function(jit_compile=jit)
    def loop(x):
        def body(i, x):
            t = tf.fill(tf.shape(x)[:1], tf.cast(i % 1000, tf.int32))
            return i + 1, network([x, t], training=False)[..., : x.shape[-1]]

        return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x))[1]

    return timed(lambda: [loop(tf.random.normal([b, *model.image_shape])) for b in batches])


def timed(fn) -> float:
    """Seconds of one call `fn()`, compilation included: what a program run sees."""
    return time_calls(fn)["median_s"]


def paired(network: Callable[[], float], loop: Callable[[], float], loop_first: bool):
    """(loop seconds, network-only seconds), run in the order given: rounds alternate it so that
    a machine whose speed drifts within a round slows both sides alike."""
    if loop_first:
        seconds = loop()
        return seconds, network()
    base = network()
    return loop(), base


def generation_batches(count: int, batch: int) -> list[int]:
    """The batch sizes `generate_uint8` runs: full batches, then the rest."""
    return [min(batch, count - start) for start in range(0, count, batch)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny_8")
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=300, help="images measured / sampled")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    args = parser.parse_args(argv)

    images = np.random.default_rng(0).integers(
        0, 256, (args.images, args.image_size, args.image_size, args.channels), dtype=np.uint8
    )
    bound_batches = [even_batch(args.images, args.batch)] * -(-args.images // args.batch)
    sample_batches = generation_batches(args.images, args.batch)
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset}, T={args.timesteps}, {args.images} images: bits/dim in batches "
        f"{bound_batches}, sampling in batches {sample_batches}; {args.rounds} alternating "
        "rounds, a fresh model each (compilation included, as in a program run)"
    )

    def bound(model: DiffusionModel, jit: bool) -> None:
        bits_per_dim(model, images, args.batch, jit_compile=jit)

    def sample(model: DiffusionModel, jit: bool) -> None:
        generate_uint8(model, args.images, 0, SamplingSpec(jit_compile=jit), batch_size=args.batch)

    ratios: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}

    def record(name: str, loop: float, network: float) -> None:
        seconds.setdefault(name, []).append(loop)
        ratios.setdefault(name, []).append(loop / network)
        print(f"  {name:<22} {loop:7.1f} s, network alone {network:7.1f} s: {loop / network:.3f}")

    for round_ in range(args.rounds):
        loop_first = round_ % 2 == 1  # alternate which side runs first
        print(
            f"round {round_ + 1} ({'loops' if loop_first else 'network alone'} first)", flush=True
        )
        for mode in args.modes:
            jit = mode == "xla"
            for name, batches, run in (
                ("bits/dim", bound_batches, bound),
                ("ancestral", sample_batches, sample),
            ):
                model = fresh_model(args)
                loop, base = paired(
                    partial(network_only, model, batches, args.timesteps, jit),
                    partial(timed, partial(run, model, jit)),
                    loop_first,
                )
                record(f"{name} {mode}", loop, base)
    print(f"{'loop':<22} {'median s':>9} {'x network (median of rounds)':>30}")
    for name in ratios:
        print(f"{name:<22} {np.median(seconds[name]):>9.1f} {np.median(ratios[name]):>30.3f}")


def fresh_model(args) -> DiffusionModel:
    """A new model (no compiled loop kept from an earlier round)."""
    network = unet.from_preset(args.preset, image_size=args.image_size, in_channels=args.channels)
    return DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", args.timesteps)))


if __name__ == "__main__":
    main()
