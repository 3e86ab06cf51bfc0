"""Evaluation and sampling against the network's own speed: how much the loops around it cost.

Bits/dim (`likelihood.bits_per_dim`) and sampling (`sampling.generate_uint8`) call the network T
times per batch; their time is compared, in one run, with the same number of network calls alone
(one compiled `tf.while_loop` of T forward passes at the same batch, the faster of graph and XLA).
Every time includes compilation, as a program run does. A ratio of 1.0 means the loop adds nothing
to the network's cost.

    python bench/eval_speed.py                                  # tiny_8 digits, 300 images
    python bench/eval_speed.py --preset small_28 --image-size 28 --images 200 --batch 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine  # noqa: E402

from ddpm_tf import (  # noqa: E402
    DiffusionModel,
    GaussianDiffusion,
    SamplingSpec,
    generate_uint8,
    get_beta_schedule,
    unet,
)
from ddpm_tf.likelihood import bits_per_dim  # noqa: E402


def network_only(model: DiffusionModel, batch: int, calls: int, jit: bool) -> float:
    """Seconds for `calls` forward passes of the EMA network at `batch`, in one compiled loop."""
    network = model.ema_network
    x = tf.random.normal([batch, *model.image_shape])

    @tf.function(jit_compile=jit)
    def loop(x):
        def body(i, x):
            t = tf.fill([batch], tf.cast(i % 1000, tf.int32))
            return i + 1, network([x, t], training=False)[..., : x.shape[-1]]

        return tf.while_loop(lambda i, _: i < calls, body, (tf.constant(0), x))[1]

    return timed(lambda: loop(x).numpy())


def timed(fn) -> float:
    """Seconds of one call, compilation included: what a program run sees."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


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
    args = parser.parse_args(argv)

    network = unet.from_preset(args.preset, image_size=args.image_size, in_channels=args.channels)
    model = DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", args.timesteps)))
    images = np.random.default_rng(0).integers(
        0, 256, (args.images, args.image_size, args.image_size, args.channels), dtype=np.uint8
    )
    batches = -(-args.images // args.batch)
    calls = args.timesteps * batches
    base = min(network_only(model, args.batch, calls, jit) for jit in (False, True))
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset} {model.image_shape}, T={args.timesteps}, {args.images} images in "
        f"batches of {args.batch}: {calls} network calls alone take {base:.1f} s"
    )
    print(f"{'loop':<28} {'seconds':>8} {'x network':>10}")
    for jit in (False, True):
        mode = "XLA" if jit else "graph"
        seconds = timed(lambda jit=jit: bits_per_dim(model, images, args.batch, jit_compile=jit))
        print(f"{'bits/dim ' + mode:<28} {seconds:>8.1f} {seconds / base:>10.2f}")
        spec = SamplingSpec(jit_compile=jit)
        seconds = timed(
            lambda spec=spec: generate_uint8(model, args.images, 0, spec, batch_size=args.batch)
        )
        print(f"{'ancestral sampling ' + mode:<28} {seconds:>8.1f} {seconds / base:>10.2f}")


if __name__ == "__main__":
    main()
