"""Training input from memory against the same pixels read from a cache file on disk.

`data.step_batches` draws global batch s from rows perm_epoch(i) of a split, either gathered from
an in-memory array or read with `os.pread` from a `PixelCache` (the layout ddpm-train writes in
its run directory). This measures batches per second of the two pipelines alone, alternating
rounds, for a few shapes. Both deliver hundreds of batches per second or more, far above any
training rate, which is why ddpm-train reads every dataset from disk (`training/ddpm_train.py:
open_data`).

    python bench/input_pipeline.py
    python bench/input_pipeline.py --rounds 5 --batches 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine  # noqa: E402

from ddpm_tf.data import step_batches  # noqa: E402
from ddpm_tf.datasets.pixel_cache import PixelCache  # noqa: E402

CASES = (  # (name, images, shape, batch)
    ("digits 8x8x1", 1_497, (8, 8, 1), 64),
    ("fashion 28x28x1", 60_000, (28, 28, 1), 64),
    ("cifar 32x32x3", 50_000, (32, 32, 3), 128),
    ("folder 64x64x3", 20_000, (64, 64, 3), 16),
)


def batches_per_second(dataset: tf.data.Dataset, batches: int) -> float:
    iterator = iter(dataset)
    next(iterator)  # the pipeline's start-up is not part of the rate
    began = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - began)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"{'split':<18} {'batch':>5} {'memory b/s':>11} {'disk b/s':>9} {'disk/memory':>12}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, count, shape, batch in CASES:
            images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
            examples = tf.data.Dataset.from_tensor_slices((images, np.zeros(count, np.int32)))
            cache = PixelCache.build(
                os.path.join(tmp, name.split()[0]), examples, num_classes=None, source={}
            )
            rates = {"memory": [], "disk": []}
            for _ in range(args.rounds):
                for kind, source in (("memory", images), ("disk", cache)):
                    stream = step_batches(source, batch_size=batch, seed=0, random_flip=True)
                    rates[kind].append(batches_per_second(stream, args.batches))
            memory, disk = (float(np.median(rates[k])) for k in ("memory", "disk"))
            print(f"{name:<18} {batch:>5} {memory:>11.0f} {disk:>9.0f} {disk / memory:>12.2f}")


if __name__ == "__main__":
    main()
